//! The usage-chunk handling of OpenAI streams: record usage; strip the
//! usage-only chunk again when the client did not ask for it.

use crate::api::sse::event_data;
use crate::policy::cost::Usage;
use bytes::Bytes;
use serde_json::Value;

/// Usage found in an OpenAI chunk, if any.
pub fn usage_of(v: &Value) -> Option<Usage> {
    let u = v.get("usage")?.as_object()?;
    Some(Usage {
        prompt_tokens: u.get("prompt_tokens").and_then(Value::as_u64).unwrap_or(0),
        completion_tokens: u
            .get("completion_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0),
    })
}

/// What to do with one upstream OpenAI stream event.
#[derive(Debug, PartialEq)]
pub enum Filtered {
    /// Forward these bytes (the original event, or a rewritten one).
    Forward(Bytes),
    /// Drop the event (a usage-only chunk the client did not ask for).
    Drop,
}

/// Inspect one OpenAI stream event: record usage, strip it when not asked for.
/// Only events that mention "usage" are parsed, so ordinary chunks pass at
/// the cost of a substring search.
pub fn filter_openai_event(
    event: Bytes,
    client_wants_usage: bool,
    usage: &mut Option<Usage>,
) -> Filtered {
    if !contains(&event, b"\"usage\"") {
        return Filtered::Forward(event);
    }
    let Some(data) = event_data(&event) else {
        return Filtered::Forward(event);
    };
    let Ok(mut v) = serde_json::from_str::<Value>(&data) else {
        return Filtered::Forward(event);
    };
    if let Some(u) = usage_of(&v) {
        *usage = Some(u);
    } else {
        return Filtered::Forward(event);
    }
    if client_wants_usage {
        return Filtered::Forward(event);
    }
    let no_choices = v
        .get("choices")
        .and_then(Value::as_array)
        .is_none_or(|c| c.is_empty());
    if no_choices {
        return Filtered::Drop;
    }
    if let Some(o) = v.as_object_mut() {
        o.remove("usage");
    }
    Filtered::Forward(Bytes::from(format!("data: {v}\n\n")))
}

/// The `error` object of an OpenAI stream event that reports a failure
/// (`data: {"error": {...}}`), if it is one. Only events that mention
/// "error" are parsed.
pub fn error_of(event: &[u8]) -> Option<Value> {
    if !contains(event, b"\"error\"") {
        return None;
    }
    let v: Value = serde_json::from_str(&event_data(event)?).ok()?;
    v.get("error").filter(|e| e.is_object()).cloned()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_chunk_is_recorded_and_stripped() {
        let mut u = None;
        let ev = Bytes::from_static(
            b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\n",
        );
        assert_eq!(
            filter_openai_event(ev.clone(), false, &mut u),
            Filtered::Drop
        );
        assert_eq!(
            u,
            Some(Usage {
                prompt_tokens: 3,
                completion_tokens: 4
            })
        );
        assert_eq!(
            filter_openai_event(ev.clone(), true, &mut u),
            Filtered::Forward(ev)
        );
        let with_choice = Bytes::from_static(
            b"data: {\"choices\":[{\"delta\":{}}],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n\n",
        );
        match filter_openai_event(with_choice, false, &mut u) {
            Filtered::Forward(b) => assert!(!contains(&b, b"usage")),
            Filtered::Drop => panic!("must keep the choices"),
        }
        let null_usage = Bytes::from_static(b"data: {\"choices\":[{}],\"usage\":null}\n\n");
        assert!(error_of(&null_usage).is_none());
        let err =
            error_of(b"data: {\"error\":{\"message\":\"boom\"}}\n\n").expect("an error event");
        assert_eq!(err["message"], "boom");
        assert!(
            error_of(b"data: {\"choices\":[{\"delta\":{\"content\":\"\\\"error\\\"\"}}]}\n\n")
                .is_none()
        );
        assert_eq!(
            filter_openai_event(null_usage.clone(), false, &mut u),
            Filtered::Forward(null_usage)
        );
    }
}
