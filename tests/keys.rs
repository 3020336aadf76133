//! Virtual keys, rate limits and budgets: in one process against wiremock,
//! across two real `slmgate` processes sharing a real `redis-server`, with
//! Redis killed mid-run, with streams (finished and abandoned), the free
//! local path when a budget is spent, and `slmgate keys add | revoke`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use http::Request;
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const BIN: &str = env!("CARGO_BIN_EXE_slmgate");

/// A key's policy entry and its plaintext.
struct Key {
    plaintext: String,
    yaml: String,
}

fn key(name: &str, extra: &str) -> Key {
    let k = slmgate::keys::generate();
    Key {
        yaml: format!(
            "  {name}: {{ id: '{}', hash: '{}'{extra} }}\n",
            k.id, k.hash
        ),
        plaintext: k.plaintext,
    }
}

fn policy(upstream: &str, keys: &[&Key], tail: &str) -> String {
    let mut p = format!(
        r#"
version: 1
backends:
  openai:
    kind: openai
    api_key_env: TEST_OPENAI_KEY
    base_url: {upstream}
    timeouts: {{ connect_ms: 500, first_byte_ms: 5000, idle_ms: 5000, total_ms: 20000 }}
    retries: {{ max_retries: 0 }}
    models:
      gpt-4o-mini: {{ input_per_mtok: 0.15, output_per_mtok: 0.60 }}
      gpt-4o: {{ input_per_mtok: 2.50, output_per_mtok: 10.00 }}
reference_model: openai/gpt-4o
routes:
  auto:
    tiers:
      - {{ name: all, target: openai/gpt-4o-mini }}
{tail}
keys:
"#
    );
    for k in keys {
        p += &k.yaml;
    }
    p
}

fn completion(prompt: u64, completion: u64) -> Value {
    json!({
        "id": "c", "object": "chat.completion", "created": 1, "model": "gpt-4o",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    })
}

async fn upstream(usage: (u64, u64)) -> MockServer {
    let s = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion(usage.0, usage.1)))
        .mount(&s)
        .await;
    s
}

fn with_key(mut req: Request<axum::body::Body>, k: &Key) -> Request<axum::body::Body> {
    let v = format!("Bearer {}", k.plaintext);
    req.headers_mut()
        .insert("authorization", v.parse().unwrap());
    req
}

async fn metrics_of(app: &axum::Router) -> String {
    send(
        app,
        Request::get("/metrics").body(Default::default()).unwrap(),
    )
    .await
    .body
}

/// 401 without or with a wrong key (in each client's format), 403 for a
/// model the key may not use, 429 + Retry-After over `rpm`; per-key metrics.
#[tokio::test]
async fn keys_gate_requests_in_the_clients_format() {
    let up = upstream((10, 5)).await;
    let team = key("team", ", models: [auto, gpt-4o-mini], rpm: 3");
    let yaml = policy(&format!("{}/v1", up.uri()), &[&team], "");
    let app = slmgate::app(state(&yaml, &[("TEST_OPENAI_KEY", SECRET)]));
    let body = chat("gpt-4o-mini", "hi");

    let r = complete(&app, &body).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "invalid_api_key");
    let anthropic = json!({"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    let mut req = post_json("/v1/messages", &anthropic);
    req.headers_mut()
        .insert("x-api-key", "sk-slm-deadbeef-00".parse().unwrap());
    let r = send(&app, req).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.json()["error"]["type"], "authentication_error");
    assert!(
        !r.body.contains("sk-slm-deadbeef"),
        "the key is never echoed"
    );

    let r = send(
        &app,
        with_key(
            post_json("/v1/chat/completions", &chat("gpt-4o", "hi")),
            &team,
        ),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("gpt-4o"));

    for i in 0..3 {
        let r = send(
            &app,
            with_key(post_json("/v1/chat/completions", &body), &team),
        )
        .await;
        assert_eq!(r.status, 200, "request {i}: {}", r.body);
    }
    let r = send(
        &app,
        with_key(post_json("/v1/chat/completions", &body), &team),
    )
    .await;
    assert_eq!(r.status, 429, "{}", r.body);
    let wait: u64 = r.header("retry-after").parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");

    let m = metrics_of(&app).await;
    for line in [
        r#"slmgate_key_requests_total{key="team",status="200"} 3"#,
        r#"slmgate_key_requests_total{key="team",status="429"} 1"#,
        r#"slmgate_key_requests_total{key="team",status="403"} 1"#,
        r#"slmgate_key_requests_total{key="none",status="401"} 2"#,
        r#"slmgate_key_limited_total{key="team",limit="rpm",outcome="rejected"} 1"#,
        r#"slmgate_key_tokens_total{direction="input",key="team"} 30"#,
    ] {
        assert!(m.contains(line), "{line}\n{m}");
    }
    assert!(!m.contains(&team.plaintext) && !m.contains(SECRET));
}

/// Budgets reserve the maximum cost, settle the real one, and refuse (with
/// `on_budget_exhausted: reject`) once the next reservation would overspend.
#[tokio::test]
async fn budgets_reserve_settle_and_refuse() {
    let up = upstream((10, 50)).await;
    // gpt-4o: reserves 10 prompt (bounded: 2 bytes + 8 for the message) +
    // 100 completion tokens = $0.001025; each answer really costs 10 x 2.5 +
    // 50 x 10 per M = $0.000525.
    let team = key("team", ", budget_usd_day: 0.002");
    let yaml = policy(
        &format!("{}/v1", up.uri()),
        &[&team],
        "on_budget_exhausted: reject",
    );
    let app = slmgate::app(state(&yaml, &[("TEST_OPENAI_KEY", SECRET)]));
    let mut body = chat("gpt-4o", "hi");
    body["max_tokens"] = json!(100);
    let mut statuses = vec![];
    for _ in 0..4 {
        let r = send(
            &app,
            with_key(post_json("/v1/chat/completions", &body), &team),
        )
        .await;
        statuses.push(r.status.as_u16());
        if r.status == 429 {
            assert!(r.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains("budget"));
            assert!(!r.header("retry-after").is_empty());
        }
    }
    assert_eq!(
        statuses,
        [200, 200, 429, 429],
        "two fit: 525 + 525 spent, then 1050 + 1025 > 2000"
    );
    let m = metrics_of(&app).await;
    assert!(
        m.contains(r#"slmgate_key_spend_usd_total{key="team"} 0.00105"#),
        "{m}"
    );
    assert!(
        m.contains(r#"slmgate_key_limited_total{key="team",limit="budget",outcome="rejected"} 2"#),
        "{m}"
    );
}

/// The reservation is an upper bound: `n` choices multiply it, a request
/// without `max_tokens` gets the limit it was reserved for written into it,
/// and a client that leaves while a whole answer is generated is charged the
/// reservation (the provider bills it anyway).
#[tokio::test]
async fn reservations_bound_what_a_request_can_cost() {
    let up = upstream((10, 5)).await;
    let slow = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(completion(10, 5))
                .set_delay(Duration::from_millis(1500)),
        )
        .mount(&slow)
        .await;
    // gpt-4o at max_tokens 100: 10 x 2.5 + 100 x 10 per M = $0.001025
    // reserved; an answer costs 10 x 2.5 + 5 x 10 per M = $0.000075.
    let team = key("team", ", budget_usd_day: 0.0015");
    let admin = key("admin", ", admin: true");
    let tail = "on_budget_exhausted: reject";
    let app = slmgate::app(state(
        &policy(&format!("{}/v1", up.uri()), &[&team, &admin], tail),
        &[("TEST_OPENAI_KEY", SECRET)],
    ));
    let mut body = chat("gpt-4o", "hi");
    body["max_tokens"] = json!(100);
    let mut two = body.clone();
    two["n"] = json!(2);
    let go = |b: &Value| send(&app, with_key(post_json("/v1/chat/completions", b), &team));
    assert_eq!(go(&body).await.status, 200);
    assert_eq!(
        go(&two).await.status,
        429,
        "n = 2 reserves 10 x 2.5 + 200 x 10 per M = $0.002025 > $0.0015"
    );
    assert_eq!(go(&body).await.status, 200, "n = 1 still fits");

    // No max_tokens: the 4096 reserved for is what the upstream may generate.
    let unlimited = chat("gpt-4o-mini", "hi");
    let rich = key("rich", ", budget_usd_day: 5");
    let app = slmgate::app(state(
        &policy(&format!("{}/v1", up.uri()), &[&rich, &admin], tail),
        &[("TEST_OPENAI_KEY", SECRET)],
    ));
    let r = send(
        &app,
        with_key(post_json("/v1/chat/completions", &unlimited), &rich),
    )
    .await;
    assert_eq!(r.status, 200);
    let sent: Value = up
        .received_requests()
        .await
        .unwrap()
        .last()
        .unwrap()
        .body_json()
        .unwrap();
    assert_eq!(sent["max_completion_tokens"], 4096, "{sent}");

    // The client leaves while the (slow) upstream generates: charged in full.
    let app = slmgate::app(state(
        &policy(&format!("{}/v1", slow.uri()), &[&team, &admin], tail),
        &[("TEST_OPENAI_KEY", SECRET)],
    ));
    use tower::ServiceExt;
    let call = app
        .clone()
        .oneshot(with_key(post_json("/v1/chat/completions", &body), &team));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), call)
            .await
            .is_err(),
        "the upstream is slow"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut req = Request::get("/v1/keys").body(Default::default()).unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", admin.plaintext).parse().unwrap(),
    );
    let listing = send(&app, req).await.json();
    let day = &usage_of(&listing, "team")["day"];
    assert!(
        (day["spent_usd"].as_f64().unwrap() - 0.001025).abs() < 1e-9,
        "{listing}"
    );
    assert_eq!(day["reserved_usd"].as_f64().unwrap(), 0.0, "{listing}");
}

/// A redis-server on a free port, killed on drop.
struct Redis {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Redis {
    fn start_on(port: u16, dir: tempfile::TempDir) -> Redis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is needed (Debian: apt-get install redis-server; .ci/run installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Redis { child, port, dir }
    }
    fn start() -> Redis {
        Redis::start_on(free_port(), tempfile::tempdir().unwrap())
    }
    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
    /// Kill it; `restart` brings it back on the same port (empty).
    fn kill(mut self) -> (u16, tempfile::TempDir) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        (self.port, dir)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap()
}

async fn post(c: &reqwest::Client, gw: &Gateway, k: &Key, body: &Value) -> u16 {
    c.post(format!("{}/v1/chat/completions", gw.url))
        .bearer_auth(&k.plaintext)
        .json(body)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

async fn keys_listing(c: &reqwest::Client, gw: &Gateway, admin: &Key) -> Value {
    c.get(format!("{}/v1/keys", gw.url))
        .bearer_auth(&admin.plaintext)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn usage_of<'a>(listing: &'a Value, name: &str) -> &'a Value {
    let all = listing["data"].as_array().unwrap();
    &all.iter().find(|k| k["name"] == name).unwrap()["usage"]
}

/// Two replicas sharing one Redis, driven at once: the requests they admit
/// together never exceed the key's rpm, and the spend they settle never
/// exceeds the budget by more than one reservation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_budgets_hold_across_two_replicas() {
    let redis = Redis::start();
    let up = upstream((10, 50)).await;
    let limited = key("limited", ", rpm: 10");
    let spender = key("spender", ", budget_usd_day: 0.01");
    let admin = key("admin", ", admin: true");
    let tail = format!(
        "state: {{ redis_url: '{}', timeout_ms: 500 }}\non_budget_exhausted: reject",
        redis.url()
    );
    let yaml = policy(
        &format!("{}/v1", up.uri()),
        &[&limited, &spender, &admin],
        &tail,
    );
    let (a, b) = (Gateway::start(&yaml), Gateway::start(&yaml));
    let c = client();

    let body = chat("gpt-4o-mini", "hi");
    let mut calls = vec![];
    for i in 0..30 {
        let gw = if i % 2 == 0 { &a } else { &b };
        calls.push(post(&c, gw, &limited, &body));
    }
    let statuses = futures::future::join_all(calls).await;
    let ok = statuses.iter().filter(|&&s| s == 200).count();
    let limited_n = statuses.iter().filter(|&&s| s == 429).count();
    assert_eq!((ok, limited_n), (10, 20), "{statuses:?}");

    // $0.01 a day; each gpt-4o request reserves $0.001025 (100 completion
    // tokens) and costs $0.000525. Eight workers, four on each replica, each
    // sending until the budget refuses it twice.
    let mut body = chat("gpt-4o", "hi");
    body["max_tokens"] = json!(100);
    let mut workers = vec![];
    for i in 0..8 {
        let (c, body, k) = (c.clone(), body.clone(), spender.plaintext.clone());
        let url = if i % 2 == 0 {
            a.url.clone()
        } else {
            b.url.clone()
        };
        workers.push(tokio::spawn(async move {
            let (mut ok, mut refused) = (0, 0);
            while refused < 2 && ok + refused < 30 {
                let s = c
                    .post(format!("{url}/v1/chat/completions"))
                    .bearer_auth(&k)
                    .json(&body)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                match s {
                    200 => ok += 1,
                    429 => refused += 1,
                    other => panic!("unexpected {other}"),
                }
            }
            ok
        }));
    }
    let mut ok = 0.0;
    for w in workers {
        ok += w.await.unwrap() as f64;
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // settlements run off the request path
    let listing = keys_listing(&c, &a, &admin).await;
    let day = &usage_of(&listing, "spender")["day"];
    let spent = day["spent_usd"].as_f64().unwrap();
    assert!(
        (spent - ok * 0.000525).abs() < 1e-9,
        "spent {spent} for {ok} answers"
    );
    assert_eq!(
        day["reserved_usd"].as_f64().unwrap(),
        0.0,
        "every reservation settled"
    );
    let overshoot = spent - 0.01;
    eprintln!("budget across replicas: {ok} answers admitted, spent ${spent:.6} of $0.01 (overshoot ${overshoot:.6}; one reservation is $0.001025)");
    assert!(
        overshoot <= 0.001025,
        "overspent by more than one reservation: {spent}"
    );
    assert!(ok >= 12.0, "most of the budget was used: {ok} answers");
    assert_eq!(listing["shared"], true);
}

/// Redis killed mid-run: fail-open keeps answering (and counts it),
/// fail-closed answers 503; nothing hangs; both recover when it returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_going_away_is_survived_and_recovered_from() {
    let redis = Redis::start();
    let up = upstream((10, 5)).await;
    let team = key("team", ", rpm: 1000");
    let admin = key("admin", ", admin: true");
    let base = format!("{}/v1", up.uri());
    let open_p = policy(
        &base,
        &[&team, &admin],
        &format!(
            "state: {{ redis_url: '{}', timeout_ms: 300, on_unavailable: open }}",
            redis.url()
        ),
    );
    let closed_p = policy(
        &base,
        &[&team, &admin],
        &format!(
            "state: {{ redis_url: '{}', timeout_ms: 300, on_unavailable: closed }}",
            redis.url()
        ),
    );
    let (open, closed) = (Gateway::start(&open_p), Gateway::start(&closed_p));
    let c = client();
    let body = chat("gpt-4o-mini", "hi");
    assert_eq!(post(&c, &open, &team, &body).await, 200);
    assert_eq!(post(&c, &closed, &team, &body).await, 200);

    let (port, dir) = redis.kill();
    for _ in 0..3 {
        let t0 = Instant::now();
        assert_eq!(
            post(&c, &open, &team, &body).await,
            200,
            "fail-open keeps answering"
        );
        assert_eq!(
            post(&c, &closed, &team, &body).await,
            503,
            "fail-closed refuses"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "bounded by the timeout: {:?}",
            t0.elapsed()
        );
    }
    let m = c
        .get(format!("{}/metrics", open.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let rpm_errors: f64 = m
        .lines()
        .find_map(|l| l.strip_prefix(r#"slmgate_state_errors_total{op="limits"} "#))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(rpm_errors >= 3.0, "the failures are counted: {m}");

    let _back = Redis::start_on(port, dir);
    let t0 = Instant::now();
    loop {
        let (o, cl) = (
            post(&c, &open, &team, &body).await,
            post(&c, &closed, &team, &body).await,
        );
        if (o, cl) == (200, 200) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no recovery: {o} {cl}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let listing = keys_listing(&c, &open, &admin).await;
    assert!(
        usage_of(&listing, "team")["requests_last_minute"]
            .as_i64()
            .unwrap()
            >= 2,
        "{listing}"
    );
}

/// An upstream that streams `chunks` OpenAI chunks, `gap` apart, then usage
/// and [DONE].
async fn drip_upstream(chunks: usize, gap: Duration) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
                if s.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let mut events: Vec<String> = (0..chunks)
                    .map(|i| format!("data: {{\"id\":\"c\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"w{i} \"}},\"finish_reason\":null}}]}}\n\n"))
                    .collect();
                events.push("data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n".into());
                events.push(format!("data: {{\"id\":\"c\",\"choices\":[],\"usage\":{{\"prompt_tokens\":10,\"completion_tokens\":{chunks}}}}}\n\n"));
                events.push("data: [DONE]\n\n".into());
                for e in events {
                    let chunk = format!("{:x}\r\n{e}\r\n", e.len());
                    if s.write_all(chunk.as_bytes()).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(gap).await;
                }
                let _ = s.write_all(b"0\r\n\r\n").await;
            });
        }
    });
    format!("http://127.0.0.1:{port}/v1")
}

/// Streams settle their reservation from the stream's usage; a client that
/// leaves mid-stream is settled from what was generated so far.
#[tokio::test]
async fn streams_settle_budgets_finished_or_abandoned() {
    let base = drip_upstream(20, Duration::from_millis(30)).await;
    let team = key("team", ", budget_usd_day: 1");
    let admin = key("admin", ", admin: true");
    let app = slmgate::app(state(
        &policy(&base, &[&team, &admin], ""),
        &[("TEST_OPENAI_KEY", SECRET)],
    ));
    let auth = format!("Bearer {}", admin.plaintext);
    let listing = |app: axum::Router| {
        let auth = auth.clone();
        async move {
            let mut req = Request::get("/v1/keys").body(Default::default()).unwrap();
            req.headers_mut()
                .insert("authorization", auth.parse().unwrap());
            send(&app, req).await.json()
        }
    };

    let mut body = chat("gpt-4o", "hi");
    body["stream"] = json!(true);
    body["max_tokens"] = json!(100);
    let r = send(
        &app,
        with_key(post_json("/v1/chat/completions", &body), &team),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.sse_data().last().map(String::as_str), Some("[DONE]"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let l = listing(app.clone()).await;
    let day = &usage_of(&l, "team")["day"];
    // 10 x 2.5 + 20 x 10 per M = $0.000225.
    assert!(
        (day["spent_usd"].as_f64().unwrap() - 0.000225).abs() < 1e-9,
        "{l}"
    );
    assert_eq!(day["reserved_usd"].as_f64().unwrap(), 0.0);

    // Leave after a few chunks.
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let resp = app
        .clone()
        .oneshot(with_key(post_json("/v1/chat/completions", &body), &team))
        .await
        .unwrap();
    let mut b = resp.into_body();
    for _ in 0..4 {
        b.frame().await.unwrap().unwrap();
    }
    drop(b);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let l = listing(app.clone()).await;
    let day = &usage_of(&l, "team")["day"];
    let spent = day["spent_usd"].as_f64().unwrap() - 0.000225;
    assert!(
        spent > 0.0 && spent < 0.000225,
        "the abandoned stream is settled from what was generated: {spent}"
    );
    assert_eq!(day["reserved_usd"].as_f64().unwrap(), 0.0, "{l}");
    let m = metrics_of(&app).await;
    assert!(
        m.contains(r#"slmgate_key_requests_total{key="team",status="499"} 1"#),
        "{m}"
    );
}

/// `slmgate keys add` writes the hash (comments kept) and prints the key as
/// stdout's last line; the gateway takes it; `revoke` removes it.
#[tokio::test]
async fn keys_add_and_revoke_edit_the_policy_file() {
    let up = upstream((10, 5)).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.yaml");
    let text = format!(
        "# team policy\nversion: 1\nbackends:\n  openai:  # the cloud\n    kind: openai\n    api_key_env: TEST_OPENAI_KEY\n    base_url: {}/v1\n    models:\n      gpt-4o-mini: {{ input_per_mtok: 0.15, output_per_mtok: 0.60 }}\n",
        up.uri()
    );
    std::fs::write(&file, &text).unwrap();
    let out = Command::new(BIN)
        .args([
            "keys",
            "add",
            "--name",
            "search",
            "--rpm",
            "5",
            "--budget-usd-day",
            "2.5",
            "--models",
            "gpt-4o-mini",
            "--policy",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let plaintext = stdout.lines().last().unwrap().trim().to_string();
    assert!(plaintext.starts_with("sk-slm-"), "{stdout}");
    let edited = std::fs::read_to_string(&file).unwrap();
    assert!(
        edited.starts_with(&text),
        "the rest of the file is kept:\n{edited}"
    );
    assert!(
        !edited.contains(&plaintext[16..]),
        "only the hash is stored"
    );
    let p = slmgate::config::Policy::from_file(&file).unwrap();
    assert_eq!(p.keys["search"].rpm, Some(5));

    let app = slmgate::app(state(&edited, &[("TEST_OPENAI_KEY", SECRET)]));
    let k = Key {
        plaintext,
        yaml: String::new(),
    };
    let r = send(
        &app,
        with_key(
            post_json("/v1/chat/completions", &chat("gpt-4o-mini", "hi")),
            &k,
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);

    let out = Command::new(BIN)
        .args(["keys", "revoke", "--name", "search", "--policy"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p = slmgate::config::Policy::from_file(&file).unwrap();
    assert!(p.keys.is_empty());
    assert!(std::fs::read_to_string(&file)
        .unwrap()
        .contains("# the cloud"));
}

async fn serving_hash(c: &reqwest::Client, gw: &Gateway, admin: &Key) -> String {
    let v: Value = c
        .get(format!("{}/v1/policy", gw.url))
        .bearer_auth(&admin.plaintext)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["sha256"].as_str().unwrap().to_string()
}

async fn reloads(c: &reqwest::Client, gw: &Gateway, result: &str) -> u64 {
    let m = c
        .get(format!("{}/metrics", gw.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = format!("slmgate_policy_reloads_total{{result=\"{result}\"}} ");
    m.lines()
        .find_map(|l| l.strip_prefix(&line))
        .map(|n| n.trim().parse().unwrap())
        .unwrap_or(0)
}

/// A changed policy file is picked up without a restart: a revoked key is
/// refused from then on, while a stream it started before the reload runs
/// to its end. An invalid file is refused and the old policy keeps serving;
/// SIGHUP reloads too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_reloads_without_dropping_streams() {
    let base = drip_upstream(30, Duration::from_millis(100)).await;
    let team = key("team", "");
    let admin = key("admin", ", admin: true");
    let gw = Gateway::start(&policy(&base, &[&team, &admin], ""));
    let c = client();
    let first = serving_hash(&c, &gw, &admin).await;
    assert_eq!(first.len(), 64);

    // A 3-second stream, started before the reload.
    let mut body = chat("gpt-4o-mini", "hi");
    body["stream"] = json!(true);
    let stream = c
        .post(format!("{}/v1/chat/completions", gw.url))
        .bearer_auth(&team.plaintext)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let reading = tokio::spawn(async move {
        let text = stream.text().await.unwrap();
        (text, Instant::now())
    });

    // Revoke `team` in the file; the watcher picks it up within ~2 s.
    let out = Command::new(BIN)
        .args(["keys", "revoke", "--name", "team", "--policy"])
        .arg(&gw.file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(8);
    while serving_hash(&c, &gw, &admin).await == first {
        assert!(
            Instant::now() < deadline,
            "the changed policy was not reloaded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reloaded_at = Instant::now();
    assert_eq!(post(&c, &gw, &team, &chat("gpt-4o-mini", "hi")).await, 401);
    assert_eq!(reloads(&c, &gw, "ok").await, 1);

    let (text, ended) = reading.await.unwrap();
    assert!(
        ended > reloaded_at,
        "the stream was still running at the reload"
    );
    assert_eq!(
        text.matches("\"content\":\"w").count(),
        30,
        "every chunk arrived: {text}"
    );
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");

    // An invalid policy is refused; the previous one keeps serving.
    let good = serving_hash(&c, &gw, &admin).await;
    let valid = std::fs::read_to_string(&gw.file).unwrap();
    std::fs::write(&gw.file, valid.replace("kind: openai", "kind: nonsense")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(8);
    while reloads(&c, &gw, "error").await == 0 {
        assert!(
            Instant::now() < deadline,
            "the invalid policy was not noticed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(serving_hash(&c, &gw, &admin).await, good);
    let r = c
        .post(format!("{}/v1/chat/completions", gw.url))
        .bearer_auth(&admin.plaintext)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the old policy still serves");
    let text = r.text().await.unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");

    // Put the valid file back and send SIGHUP: reloaded on the signal too.
    std::fs::write(&gw.file, &valid).unwrap();
    let deadline = Instant::now() + Duration::from_secs(8);
    while reloads(&c, &gw, "ok").await < 2 {
        assert!(
            Instant::now() < deadline,
            "the fixed policy was not reloaded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let hup = Command::new("kill")
        .args(["-HUP", &gw.child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    while reloads(&c, &gw, "ok").await < 3 {
        assert!(Instant::now() < deadline, "SIGHUP did not reload");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A reload keeps every backend whose config did not change (its
/// connections; a loaded local model is kept the same way), the triage and
/// the shared counters, and builds only what changed.
#[tokio::test]
async fn reload_keeps_what_did_not_change() {
    let up = upstream((10, 5)).await;
    let team = key("team", "");
    let base = format!("{}/v1", up.uri());
    let yaml = policy(&base, &[&team], "");
    let old = state(&yaml, &[("TEST_OPENAI_KEY", SECRET)]);
    let opts = || slmgate::state::StateOptions {
        env: Box::new(|k| (k == "TEST_OPENAI_KEY").then(|| SECRET.to_string())),
        models_dir: models_dir(),
        start_local: true,
    };
    let extra = key("extra", ", rpm: 5");
    let same_backends = policy(&base, &[&team, &extra], "");
    let new = old
        .reload(
            slmgate::config::Policy::from_yaml(&same_backends).unwrap(),
            opts(),
        )
        .unwrap();
    assert!(std::sync::Arc::ptr_eq(
        old.backends.get("openai").unwrap(),
        new.backends.get("openai").unwrap()
    ));
    assert!(std::sync::Arc::ptr_eq(&old.triage, &new.triage));
    assert!(std::sync::Arc::ptr_eq(&old.shared, &new.shared));
    assert_ne!(old.policy.source_hash, new.policy.source_hash);

    let changed = same_backends.replace("total_ms: 20000", "total_ms: 30000");
    let newer = new
        .reload(
            slmgate::config::Policy::from_yaml(&changed).unwrap(),
            opts(),
        )
        .unwrap();
    assert!(!std::sync::Arc::ptr_eq(
        new.backends.get("openai").unwrap(),
        newer.backends.get("openai").unwrap()
    ));
}

/// The exact cache's Redis tier: two gateway processes, a miss on one, then
/// a hit on the other (the same bytes; the upstream asked once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_answers_are_shared_through_redis() {
    let redis = Redis::start();
    let up = upstream((10, 5)).await;
    let team = key("team", "");
    let tail = format!(
        "state: {{ redis_url: '{}', timeout_ms: 500 }}\ncache: {{ exact: {{ shared: true }} }}",
        redis.url()
    );
    let yaml = policy(&format!("{}/v1", up.uri()), &[&team], &tail);
    let (a, b) = (Gateway::start(&yaml), Gateway::start(&yaml));
    let c = client();
    let mut body = chat("gpt-4o-mini", "What is the tallest mountain?");
    body["temperature"] = json!(0);
    let ask = |gw: &Gateway| {
        c.post(format!("{}/v1/chat/completions", gw.url))
            .bearer_auth(&team.plaintext)
            .json(&body)
            .send()
    };
    let first = ask(&a).await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["x-slmgate-cache"], "miss");
    let first = first.text().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await; // stored off the request path
    let second = ask(&b).await.unwrap();
    assert_eq!(second.status(), 200);
    assert_eq!(second.headers()["x-slmgate-cache"], "hit");
    assert_eq!(second.text().await.unwrap(), first);
    assert_eq!(up.received_requests().await.unwrap().len(), 1);
}
