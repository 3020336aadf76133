//! Personal and secret data in requests: what is found (`detect`) and what
//! the policy does about it (`apply`, used by the privacy layer).

pub mod detect;

use crate::api::openai::ParsedRequest;
use detect::{Finding, PiiKind};
use serde_json::Value;
use std::collections::BTreeMap;

/// What was found in a request, by kind (never the data itself).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PiiFound(pub BTreeMap<PiiKind, usize>);

impl PiiFound {
    pub fn of(req: &ParsedRequest) -> PiiFound {
        let mut found = BTreeMap::new();
        for m in &req.messages {
            for f in detect::detect(&m.text) {
                *found.entry(f.kind).or_insert(0) += 1;
            }
        }
        PiiFound(found)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn kinds(&self) -> impl Iterator<Item = PiiKind> + '_ {
        self.0.keys().copied()
    }

    /// `email,phone` (for a header).
    pub fn names(&self, only: impl Fn(PiiKind) -> bool) -> String {
        self.kinds()
            .filter(|k| only(*k))
            .map(PiiKind::as_str)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// `s` with the findings of the `covered` kinds replaced by `[KIND]`.
fn redacted(s: &str, covered: &dyn Fn(PiiKind) -> bool) -> String {
    let fs: Vec<Finding> = detect::detect(s)
        .into_iter()
        .filter(|f| covered(f.kind))
        .collect();
    if fs.is_empty() {
        s.to_string()
    } else {
        detect::redact(s, &fs)
    }
}

/// Redact every text a backend could see: the parsed messages, the raw
/// OpenAI body's message contents and, for `/v1/messages`, the native
/// body's messages and system prompt.
pub fn redact_request(req: &mut ParsedRequest, covered: &dyn Fn(PiiKind) -> bool) {
    for m in &mut req.messages {
        m.text = redacted(&m.text, covered);
    }
    if let Some(Value::Array(msgs)) = req.raw.get_mut("messages") {
        for m in msgs {
            if let Some(c) = m.get_mut("content") {
                redact_content(c, covered);
            }
        }
    }
    if let Some(native) = req.native.as_mut() {
        let n = std::sync::Arc::make_mut(native);
        if let Some(Value::Array(msgs)) = n.body.get_mut("messages") {
            for m in msgs {
                if let Some(c) = m.get_mut("content") {
                    redact_content(c, covered);
                }
            }
        }
        if let Some(sys) = n.body.get_mut("system") {
            redact_content(sys, covered);
        }
    }
}

/// A message content: a string, or parts/blocks with `text`.
fn redact_content(c: &mut Value, covered: &dyn Fn(PiiKind) -> bool) {
    match c {
        Value::String(s) => *s = redacted(s, covered),
        Value::Array(parts) => {
            for p in parts {
                if let Some(Value::String(t)) = p.get_mut("text") {
                    *t = redacted(t, covered);
                }
            }
        }
        _ => {}
    }
}
