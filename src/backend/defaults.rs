//! A model's default sampling (`defaults:` on its policy entry), written
//! into a request for the fields the client left out — in the parsed view
//! (the local model reads it) and in the body sent upstream (OpenAI pivot,
//! and a `/v1/messages` request's own body: the keys are the same).

use crate::api::openai::ParsedRequest;
use crate::config::SamplingDefaults;
use serde_json::{Map, Value};
use std::sync::Arc;

/// `req` with the defaults filled in, or `None` when nothing was missing.
pub fn apply(d: &SamplingDefaults, req: &ParsedRequest) -> Option<ParsedRequest> {
    let temperature = d.temperature.filter(|_| req.temperature.is_none());
    let top_p = d.top_p.filter(|_| req.top_p.is_none());
    let max_tokens = d.max_tokens.filter(|_| req.max_tokens.is_none());
    if temperature.is_none() && top_p.is_none() && max_tokens.is_none() {
        return None;
    }
    let mut out = req.clone();
    let fill = |body: &mut Map<String, Value>| {
        if let Some(t) = temperature {
            body.insert("temperature".into(), t.into());
        }
        if let Some(p) = top_p {
            body.insert("top_p".into(), p.into());
        }
        if let Some(m) = max_tokens {
            body.insert("max_tokens".into(), m.into());
        }
    };
    fill(&mut out.raw);
    if let Some(native) = &req.native {
        let mut n = (**native).clone();
        fill(&mut n.body);
        out.native = Some(Arc::new(n));
    }
    out.temperature = out.temperature.or(temperature);
    out.top_p = out.top_p.or(top_p);
    out.max_tokens = out.max_tokens.or(max_tokens);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(body: &str) -> ParsedRequest {
        crate::api::request::chat_request(body.as_bytes()).unwrap()
    }

    #[test]
    fn fills_only_what_the_request_left_out() {
        let d = SamplingDefaults {
            temperature: Some(0.2),
            top_p: Some(0.9),
            max_tokens: Some(256),
        };
        let r = parsed(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"top_p":0.5}"#);
        let out = apply(&d, &r).unwrap();
        assert_eq!(
            (out.temperature, out.top_p, out.max_tokens),
            (Some(0.2), Some(0.5), Some(256))
        );
        assert_eq!(out.raw["temperature"], 0.2);
        assert_eq!(out.raw["top_p"], 0.5, "the client's own value stays");
        assert_eq!(out.raw["max_tokens"], 256);

        let full = parsed(
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":0,"top_p":1,"max_completion_tokens":9}"#,
        );
        assert!(apply(&d, &full).is_none(), "nothing left out");
        assert!(apply(&SamplingDefaults::default(), &r).is_none());
    }
}
