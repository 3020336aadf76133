//! The real binary: `check`, and graceful shutdown with a stream in flight.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_slmgate");

#[test]
fn check_validates_policies() {
    let ok = Command::new(BIN)
        .args(["check", "--policy", "policies/default.yaml"])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("ok"));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    let text = std::fs::read_to_string("policies/default.yaml")
        .unwrap()
        .replace("target: openai/gpt-4o-mini", "target: openai/gpt-9");
    std::fs::write(&bad, text).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--policy"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("routes.auto.tiers[1].target") && err.contains("openai/gpt-4o-mini"),
        "{err}"
    );

    let out = Command::new(BIN)
        .args(["check", "--policy", "/nonexistent.yaml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// An upstream that streams 6 SSE chunks, 250 ms apart.
async fn slow_upstream() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut got = Vec::new();
                // Read the head and the body (Content-Length).
                loop {
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if got.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n").await;
                let mut events: Vec<String> = (0..6).map(|i| format!("data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"p{i} \"}}}}]}}\n\n")).collect();
                events.push("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":6}}\n\n".into());
                events.push("data: [DONE]\n\n".into());
                for e in events {
                    let _ = s
                        .write_all(format!("{:x}\r\n{e}\r\n", e.len()).as_bytes())
                        .await;
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                let _ = s.write_all(b"0\r\n\r\n").await;
            });
        }
    });
    port
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_streams_and_refuses_new_connections() {
    let up = slow_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.yaml");
    std::fs::write(
        &policy,
        format!(
            r#"
version: 1
server: {{ shutdown_grace_secs: 20 }}
backends:
  up:
    kind: openai
    api_key_env: SLOW_KEY
    base_url: http://127.0.0.1:{up}/v1
    models:
      m: {{ input_per_mtok: 1, output_per_mtok: 2 }}
routes:
  auto:
    tiers: [{{ name: all, target: up/m }}]
"#
        ),
    )
    .unwrap();
    let port = free_port();
    let mut child = Command::new(BIN)
        .args(["serve", "--policy"])
        .arg(&policy)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("SLOW_KEY", "k")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let t0 = Instant::now();
    while client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "gateway did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut resp = client.post(format!("{base}/v1/chat/completions"))
        .json(&serde_json::json!({"model": "auto", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let first = resp.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("p0"));
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    // New connections are refused soon after the signal...
    let t0 = Instant::now();
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "listener still accepting after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ...while the in-flight stream runs to its end.
    let mut rest = String::from_utf8_lossy(&first).to_string();
    while let Some(c) = resp.chunk().await.unwrap() {
        rest += &String::from_utf8_lossy(&c);
    }
    assert!(
        rest.contains("p5") && rest.trim_end().ends_with("data: [DONE]"),
        "{rest}"
    );
    assert!(!rest.contains("usage"), "usage chunk stripped: {rest}");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let mut log = String::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        log += &line.unwrap();
        log.push('\n');
    }
    assert!(log.contains("draining"), "{log}");
    let _ = std::io::stderr().write_all(b"");
}
