//! The usage-chunk handling of OpenAI streams: record usage; strip the
//! usage-only chunk again when the client did not ask for it.

use crate::api::sse::event_data;
use crate::policy::cost::Usage;
use bytes::Bytes;
use serde_json::Value;

/// Whether an OpenAI stream event is the final `data: [DONE]` (any line
/// ending, with or without the space).
pub fn is_done(event: &[u8]) -> bool {
    // Only short events can be it: no parsing of ordinary chunks.
    event.len() <= 32 && event_data(event).is_some_and(|d| d.trim() == "[DONE]")
}

/// Usage found in an OpenAI chunk, if any (a missing or null count is 0).
pub fn usage_of(v: &Value) -> Option<Usage> {
    usage_from(v.get("usage")?)
}

/// An OpenAI `usage` object as ours (a missing or null count is 0).
pub fn usage_from(u: &Value) -> Option<Usage> {
    let u = u.as_object()?;
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
    /// The upstream reported a failure (`data: {"error": {...}}`): its
    /// `error` object.
    Failed(Value),
}

/// Inspect one OpenAI stream event: record usage, strip it when not asked
/// for, and tell an error event apart. Only events that mention "usage" or
/// "error" are parsed, so ordinary chunks pass at the cost of one scan.
pub fn filter_openai_event(
    event: Bytes,
    client_wants_usage: bool,
    usage: &mut Option<Usage>,
) -> Filtered {
    let (has_usage, has_error) = mentions(&event);
    if !has_usage && !has_error {
        return Filtered::Forward(event);
    }
    let Some(data) = event_data(&event) else {
        return Filtered::Forward(event);
    };
    let Ok(mut v) = serde_json::from_str::<Value>(&data) else {
        return Filtered::Forward(event);
    };
    if let Some(e) = v.get_mut("error").filter(|e| e.is_object()) {
        return Filtered::Failed(e.take());
    }
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

/// Whether an event names a `"usage"` and an `"error"` key (one pass over
/// its quotes).
fn mentions(event: &[u8]) -> (bool, bool) {
    let (mut usage, mut error) = (false, false);
    for (i, _) in event.iter().enumerate().filter(|(_, &b)| b == b'"') {
        let rest = &event[i..];
        usage |= rest.starts_with(b"\"usage\"");
        error |= rest.starts_with(b"\"error\"");
    }
    (usage, error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

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
            other => panic!("must keep the choices: {other:?}"),
        }
        assert!(is_done(b"data: [DONE]\r\n\r\n") && is_done(b"data:[DONE]\n\n"));
        assert!(!is_done(b"data: {\"choices\":[]}\n\n"));
        let lenient = serde_json::json!({"usage": {"prompt_tokens": 3, "completion_tokens": null}});
        assert_eq!(
            usage_of(&lenient),
            Some(Usage {
                prompt_tokens: 3,
                completion_tokens: 0
            })
        );
        let null_usage = Bytes::from_static(b"data: {\"choices\":[{}],\"usage\":null}\n\n");
        let err = Bytes::from_static(b"data: {\"error\":{\"message\":\"boom\"}}\n\n");
        match filter_openai_event(err, false, &mut u) {
            Filtered::Failed(e) => assert_eq!(e["message"], "boom"),
            other => panic!("an error event: {other:?}"),
        }
        let quoted = Bytes::from_static(
            b"data: {\"choices\":[{\"delta\":{\"content\":\"\\\"error\\\"\"}}]}\n\n",
        );
        assert_eq!(
            filter_openai_event(quoted.clone(), false, &mut u),
            Filtered::Forward(quoted),
            "only an `error` key is a failure"
        );
        assert_eq!(
            filter_openai_event(null_usage.clone(), false, &mut u),
            Filtered::Forward(null_usage)
        );
    }
}
