//! The local tier beyond one process: two `slmgate serve` processes serve
//! the real local model (OpenAI-compatible servers), and a third slmgate
//! routes its local tier to both (`self_hosted: true`, `base_urls`). One
//! replica is killed mid-run: no request fails (each could go to the other),
//! the dead one is ejected; it comes back on the same port and is let in
//! again after a probe.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn replica_policy() -> String {
    let gguf = smollm2_gguf();
    format!(
        r#"
version: 1
triage: {{ kind: features }}
backends:
  local:
    kind: local
    gguf: {}
    max_queue: 64
    default_max_tokens: 4
    models:
      local: {{ input_per_mtok: 0, output_per_mtok: 0 }}
"#,
        gguf.display()
    )
}

fn front_policy(a: u16, b: u16) -> String {
    format!(
        r#"
version: 1
triage: {{ kind: features }}
backends:
  fleet:
    kind: openai
    self_hosted: true
    base_urls: [http://127.0.0.1:{a}/v1, http://127.0.0.1:{b}/v1]
    eject: {{ failures: 2, secs: 1, max_secs: 2 }}
    timeouts: {{ connect_ms: 1000, first_byte_ms: 20000, idle_ms: 20000, total_ms: 30000 }}
    models:
      local: {{ input_per_mtok: 0, output_per_mtok: 0 }}
"#
    )
}

async fn get(client: &reqwest::Client, url: &str) -> (u16, String) {
    match client.get(url).send().await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(_) => (0, String::new()),
    }
}

/// Wait until `url` answers 200 (a model loads in a few seconds).
async fn wait_ok(client: &reqwest::Client, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while get(client, url).await.0 != 200 {
        assert!(Instant::now() < deadline, "{url} never became ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn metric_in(text: &str, line: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(line))
        .and_then(|v| v.trim().parse().ok())
}

/// Requests a replica's own gateway answered.
async fn served(client: &reqwest::Client, gw: &str) -> f64 {
    let (_, m) = get(client, &format!("{gw}/metrics")).await;
    m.lines()
        .filter(|l| l.starts_with("slmgate_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn healthy(client: &reqwest::Client, front: &str) -> Option<f64> {
    let (_, m) = get(client, &format!("{front}/metrics")).await;
    metric_in(&m, r#"slmgate_backend_replicas_healthy{backend="fleet"}"#)
}

/// One chat request through the front gateway: (status, backend kind).
async fn ask(client: &reqwest::Client, front: &str, i: usize) -> (u16, String) {
    let body = json!({"model": "local", "temperature": 0, "max_tokens": 4,
        "messages": [{"role": "user", "content": format!("Say the number {i}.")}]});
    let r = client
        .post(format!("{front}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let kind = r
        .headers()
        .get("x-slmgate-backend-kind")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert!(
        status != 200 || v["choices"][0]["message"]["content"].is_string(),
        "{v}"
    );
    (status, kind)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_dies_and_comes_back() {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let (pa, pb) = (free_port(), free_port());
    let mut a = Gateway::start_at(&replica_policy(), pa);
    let b = Gateway::start_at(&replica_policy(), pb);
    let front = Gateway::start(&front_policy(pa, pb));
    for gw in [&a.url, &b.url, &front.url] {
        wait_ok(&client, &format!("{gw}/readyz")).await;
    }
    assert_eq!(healthy(&client, &front.url).await, Some(2.0));

    // Four clients in a loop; replica A is killed while they run.
    let stop = Instant::now() + Duration::from_secs(8);
    let mut clients = Vec::new();
    for c in 0..4 {
        let (client, url) = (client.clone(), front.url.clone());
        clients.push(tokio::spawn(async move {
            let mut out = Vec::new();
            let mut i = c * 1000;
            while Instant::now() < stop {
                out.push(ask(&client, &url, i).await);
                i += 1;
            }
            out
        }));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before_kill = served(&client, &a.url).await;
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let mut results = Vec::new();
    for c in clients {
        results.extend(c.await.unwrap());
    }
    assert!(
        before_kill > 0.0,
        "both replicas took requests before the kill"
    );
    let failed: Vec<_> = results.iter().filter(|(s, _)| *s != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} failed: {failed:?}",
        failed.len(),
        results.len()
    );
    assert!(
        results.iter().all(|(_, k)| k == "local"),
        "self-hosted answers say local"
    );
    assert!(results.len() >= 8, "{} requests", results.len());

    // A is out of rotation, and /readyz says so.
    assert_eq!(healthy(&client, &front.url).await, Some(1.0));
    let (_, ready) = get(&client, &format!("{}/readyz", front.url)).await;
    let ready: Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(
        ready["replicas"]["fleet"],
        json!({"healthy": 1, "total": 2})
    );

    // A comes back where it was: a probe lets it in again, and it answers.
    let a = Gateway::start_at(&replica_policy(), pa);
    wait_ok(&client, &format!("{}/readyz", a.url)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while healthy(&client, &front.url).await != Some(2.0) {
        assert!(Instant::now() < deadline, "A was never let back in");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for i in 0..16 {
        assert_eq!(ask(&client, &front.url, i).await.0, 200);
        if served(&client, &a.url).await > 0.0 {
            return;
        }
    }
    panic!("A took no request after it was let back in");
}
