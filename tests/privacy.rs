//! Privacy routing: the detector's precision and recall on the labeled
//! snippet set (`tests/data/pii.jsonl`: 363 snippets, 165 with personal or
//! secret data, most of the rest near-misses), and the `pii` rules in the
//! request path — redact before the cloud call, keep local (the real model),
//! reject in the client's format — with `/v1/triage` and the metrics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{json, Value};
use slmgate::privacy::detect::{detect, PiiKind};
use std::collections::BTreeSet;

#[test]
fn labeled_snippets_precision_and_recall() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pii.jsonl"),
    )
    .unwrap();
    let rows: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(rows.len() >= 300);
    let (mut tp, mut fp, mut fn_) = (
        std::collections::BTreeMap::<&str, usize>::new(),
        std::collections::BTreeMap::<&str, usize>::new(),
        std::collections::BTreeMap::<&str, usize>::new(),
    );
    let mut wrong = vec![];
    for r in &rows {
        let t = r["text"].as_str().unwrap();
        let want: BTreeSet<String> = r["kinds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap().to_string())
            .collect();
        let got: BTreeSet<String> = detect(t)
            .iter()
            .map(|f| f.kind.as_str().to_string())
            .collect();
        for k in PiiKind::ALL.map(PiiKind::as_str) {
            match (want.contains(k), got.contains(k)) {
                (true, true) => *tp.entry(k).or_default() += 1,
                (false, true) => *fp.entry(k).or_default() += 1,
                (true, false) => *fn_.entry(k).or_default() += 1,
                _ => {}
            }
        }
        if want != got {
            wrong.push(format!("{want:?} vs {got:?}: {t}"));
        }
    }
    println!("| kind | precision | recall | tp | fp | fn |");
    println!("|---|---:|---:|---:|---:|---:|");
    let f = |m: &std::collections::BTreeMap<&str, usize>, k: &str| *m.get(k).unwrap_or(&0) as f64;
    let (mut atp, mut afp, mut afn) = (0.0, 0.0, 0.0);
    for k in PiiKind::ALL.map(PiiKind::as_str) {
        let (t, p, n) = (f(&tp, k), f(&fp, k), f(&fn_, k));
        (atp, afp, afn) = (atp + t, afp + p, afn + n);
        println!(
            "| {k} | {:.3} | {:.3} | {t} | {p} | {n} |",
            t / (t + p).max(1.0),
            t / (t + n).max(1.0)
        );
    }
    let (precision, recall) = (atp / (atp + afp), atp / (atp + afn));
    println!("| all | {precision:.3} | {recall:.3} | {atp} | {afp} | {afn} |");
    for w in &wrong {
        eprintln!("MISMATCH {w}");
    }
    assert!(precision >= 0.9, "precision {precision}");
    assert!(recall >= 0.9, "recall {recall}");
}

fn policy(upstream: &str) -> String {
    let gguf = models_dir().join(slmgate::fetch::SMOLLM2_GGUF);
    format!(
        r#"
version: 1
backends:
  openai:
    kind: openai
    api_key_env: TEST_OPENAI_KEY
    base_url: {upstream}
    retries: {{ max_retries: 0 }}
    models:
      gpt-4o-mini: {{ input_per_mtok: 0.15, output_per_mtok: 0.60 }}
  local:
    kind: local
    gguf: {}
    models:
      local: {{ input_per_mtok: 0, output_per_mtok: 0 }}
reference_model: openai/gpt-4o-mini
routes:
  redacted:
    pii: {{ action: redact }}
    tiers:
      - {{ name: all, target: openai/gpt-4o-mini }}
  private:
    pii: {{ action: local, kinds: [email, phone] }}
    tiers:
      - {{ name: all, target: openai/gpt-4o-mini }}
  strict:
    pii: {{ action: reject, kinds: [card, ssn, secret] }}
    tiers:
      - {{ name: all, target: openai/gpt-4o-mini }}
"#,
        gguf.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_redact_keep_local_or_reject() {
    let up = openai_upstream("ok", 1).await;
    let s = state(
        &policy(&format!("{}/v1", up.uri())),
        &[("TEST_OPENAI_KEY", SECRET)],
    );
    s.wait_ready().await.expect("the local model loads");
    let app = slmgate::app(s);
    let secret_bits =
        "Email jane.doe@example.com or call +1 415 555 0132 about card 4111 1111 1111 1111.";

    // redact: the upstream sees [EMAIL], [PHONE], [CARD], never the data.
    let mut body = chat("redacted", secret_bits);
    body["max_tokens"] = json!(8);
    let r = complete(&app, &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-slmgate-pii"), "redacted email,phone,card");
    let sent = String::from_utf8(up.received_requests().await.unwrap()[0].body.clone()).unwrap();
    assert!(
        sent.contains("[EMAIL]") && sent.contains("[PHONE]") && sent.contains("[CARD]"),
        "{sent}"
    );
    for leak in ["jane.doe@example.com", "555 0132", "4111 1111"] {
        assert!(!sent.contains(leak), "{leak} reached the cloud: {sent}");
    }

    // local: the real model answers; nothing goes upstream.
    let r = complete(
        &app,
        &chat(
            "private",
            "My email is jane.doe@example.com, write me a greeting.",
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-slmgate-backend"), "local");
    assert_eq!(r.header("x-slmgate-pii"), "local email");
    assert_eq!(up.received_requests().await.unwrap().len(), 1);
    // ...but only for the kinds the rule names.
    let r = complete(&app, &chat("private", "My SSN is 123-45-6789.")).await;
    assert_eq!(r.header("x-slmgate-backend"), "openai");

    // reject: 400 in each client's format, the data never echoed.
    let r = complete(&app, &chat("strict", "My SSN is 123-45-6789.")).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    assert!(
        r.body.contains("ssn") && !r.body.contains("123-45-6789"),
        "{}",
        r.body
    );
    let anthropic = json!({"model": "strict", "max_tokens": 5,
        "messages": [{"role": "user", "content": "key sk-proj-Ab3dE5fG7hJ9kL1mN3pQ5rS7"}]});
    let r = send(&app, post_json("/v1/messages", &anthropic)).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["type"], "error");
    assert!(!r.body.contains("Ab3dE5fG7"), "{}", r.body);
    // Nothing to act on: passes untouched.
    let r = complete(
        &app,
        &chat("strict", "Order 1234567890123456 shipped on 2024-01-15."),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-slmgate-pii"), "");

    // /v1/triage shows what was found, and the metrics count it by kind.
    let r = send(
        &app,
        post_json(
            "/v1/triage",
            &json!({"model": "redacted", "prompt": secret_bits}),
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["pii"], json!({"email": 1, "phone": 1, "card": 1}));
    let m = send(
        &app,
        http::Request::get("/metrics")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await
    .body;
    assert!(
        m.contains(r#"slmgate_pii_detected_total{kind="email"}"#),
        "{m}"
    );
    assert!(
        m.contains(r#"slmgate_pii_actions_total{action="reject"} 2"#),
        "{m}"
    );
    assert!(!m.contains("jane.doe"), "never the data");
}
