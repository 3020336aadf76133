//! The exact response cache: answers kept by a canonical hash of the
//! request, in this process (moka, bounded in bytes, with a TTL) and, when
//! the policy says so, in Redis too so that replicas share hits. An entry is
//! the answer as dispatch gave it (its chunks, in the backend's API shape)
//! and what it used, so a hit goes up through the same edge and meter as a
//! fresh answer: whole answers come back byte for byte, streams as the same
//! events.

pub mod guards;
pub mod semantic;

use crate::api::openai::ParsedRequest;
use crate::api::ApiFormat;
use crate::config::ExactCacheConfig;
use crate::metrics::Metrics;
use crate::policy::cost::Usage;
use crate::policy::Target;
use crate::store::guard::Shared;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;

/// One cached answer.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The API shape of `chunks`.
    pub format: ApiFormat,
    pub streamed: bool,
    /// The body as dispatch sent it: one chunk for a whole answer, the
    /// events of a stream.
    pub chunks: Vec<Bytes>,
    pub usage: Usage,
    /// The route it was answered on, and what answered it.
    pub route: String,
    pub target: Target,
}

impl Entry {
    fn weight(&self) -> u32 {
        let body: usize = self.chunks.iter().map(Bytes::len).sum();
        (body + 256 + self.route.len()).min(u32::MAX as usize) as u32
    }
}

/// An entry as Redis keeps it.
#[derive(Serialize, Deserialize)]
struct Stored {
    v: u8,
    anthropic: bool,
    streamed: bool,
    chunks: Vec<String>,
    prompt_tokens: u64,
    completion_tokens: u64,
    route: String,
    backend: String,
    model: String,
}

impl Stored {
    fn from_entry(e: &Entry) -> Option<Stored> {
        Some(Stored {
            v: 1,
            anthropic: e.format == ApiFormat::Anthropic,
            streamed: e.streamed,
            chunks: e
                .chunks
                .iter()
                .map(|c| String::from_utf8(c.to_vec()).ok())
                .collect::<Option<_>>()?,
            prompt_tokens: e.usage.prompt_tokens,
            completion_tokens: e.usage.completion_tokens,
            route: e.route.clone(),
            backend: e.target.backend.clone(),
            model: e.target.model.clone(),
        })
    }

    fn into_entry(self) -> Option<Entry> {
        (self.v == 1).then(|| Entry {
            format: if self.anthropic {
                ApiFormat::Anthropic
            } else {
                ApiFormat::OpenAi
            },
            streamed: self.streamed,
            chunks: self.chunks.into_iter().map(Bytes::from).collect(),
            usage: Usage {
                prompt_tokens: self.prompt_tokens,
                completion_tokens: self.completion_tokens,
            },
            route: self.route,
            target: Target {
                backend: self.backend,
                model: self.model,
            },
        })
    }
}

/// Where a hit came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Memory,
    Redis,
}

pub struct ExactCache {
    memory: moka::sync::Cache<[u8; 32], Arc<Entry>>,
    /// The shared tier, when the policy asks for it.
    redis: Option<Arc<Shared>>,
    pub config: ExactCacheConfig,
    metrics: Arc<Metrics>,
}

impl ExactCache {
    pub fn new(
        config: ExactCacheConfig,
        shared: Option<Arc<Shared>>,
        metrics: Arc<Metrics>,
    ) -> ExactCache {
        let evictions = metrics.cache_evictions.clone();
        let memory = moka::sync::Cache::builder()
            .max_capacity(config.max_bytes)
            .weigher(|_k, e: &Arc<Entry>| e.weight())
            .time_to_live(Duration::from_secs(config.ttl_secs))
            .eviction_listener(move |_k, _v, cause| {
                if cause == moka::notification::RemovalCause::Size {
                    evictions.with_label_values(&["exact"]).inc();
                }
            })
            .build();
        let redis = shared.filter(|s| config.shared && s.store.is_shared());
        ExactCache {
            memory,
            redis,
            config,
            metrics,
        }
    }

    /// The answer for `key`: this process first, then Redis (a Redis hit is
    /// kept here too). Redis failing is a miss, never an error.
    pub async fn get(&self, key: &[u8; 32]) -> Option<(Arc<Entry>, Tier)> {
        if let Some(e) = self.memory.get(key) {
            return Some((e, Tier::Memory));
        }
        let shared = self.redis.as_ref()?;
        let got = shared.store.blob_get(&redis_key(key)).await;
        let blob = match got {
            Ok(b) => b?,
            Err(e) => {
                shared.judge_soft("cache_get", e);
                return None;
            }
        };
        let entry = serde_json::from_slice::<Stored>(&blob)
            .ok()
            .and_then(Stored::into_entry)?;
        let entry = Arc::new(entry);
        self.memory.insert(*key, entry.clone());
        Some((entry, Tier::Redis))
    }

    /// Keep `entry` (and send it to Redis, off the request path).
    pub fn put(&self, key: [u8; 32], entry: Entry) {
        let entry = Arc::new(entry);
        if let Some(shared) = self.redis.clone() {
            if let Some(blob) = Stored::from_entry(&entry).and_then(|s| serde_json::to_vec(&s).ok())
            {
                let ttl = self.config.ttl_secs * 1000;
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    rt.spawn(async move {
                        if let Err(e) = shared.store.blob_set(&redis_key(&key), &blob, ttl).await {
                            shared.judge_soft("cache_put", e);
                        }
                    });
                }
            }
        }
        self.memory.insert(key, entry);
        self.memory.run_pending_tasks();
        self.metrics
            .cache_bytes
            .with_label_values(&["exact"])
            .set(self.memory.weighted_size() as i64);
    }
}

fn redis_key(key: &[u8; 32]) -> String {
    let mut s = String::with_capacity(20 + 64);
    s.push_str("slmgate:cache:");
    for b in key {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Fields that do not change the answer.
const IGNORED: &[&str] = &[
    "user",
    "metadata",
    "stream",
    "store",
    "service_tier",
    "prompt_cache_key",
    "safety_identifier",
];

/// SHA-256 started with `tag`, the client's API, the caller (unless keys
/// share answers), the model or route asked for and whether it streams.
fn hasher(tag: &[u8], req: &ParsedRequest, client: ApiFormat, caller: Option<&str>) -> Sha256 {
    let mut h = Sha256::new();
    h.update(tag);
    h.update(match client {
        ApiFormat::OpenAi => "\0openai\0",
        ApiFormat::Anthropic => "\0anthropic\0",
    });
    h.update(caller.unwrap_or("").as_bytes());
    h.update(b"\0");
    h.update(req.model.as_bytes());
    h.update(if req.stream { b"\0s\0" } else { b"\0w\0" });
    h
}

/// The request body (the native one for `/v1/messages`) in canonical JSON
/// (objects' keys sorted), without the fields that do not change the answer.
fn canonical_body(body: &Map<String, Value>) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    canonical_object(body, IGNORED, &mut out);
    out
}

/// The request's cache key: `hasher` and the canonical body.
pub fn key(req: &ParsedRequest, client: ApiFormat, caller: Option<&str>) -> [u8; 32] {
    let mut h = hasher(b"slmgate-exact-v1", req, client, caller);
    h.update(canonical_body(
        req.native.as_ref().map_or(&req.raw, |n| &n.body),
    ));
    h.finalize().into()
}

/// The semantic cache's bucket: like `key`, but with the last user
/// message's content left out (its meaning is compared instead).
pub fn bucket(req: &ParsedRequest, client: ApiFormat, caller: Option<&str>) -> u64 {
    let mut h = hasher(b"slmgate-semantic-v1", req, client, caller);
    let mut body = req.native.as_ref().map_or(&req.raw, |n| &n.body).clone();
    if let Some(Value::Array(msgs)) = body.get_mut("messages") {
        if let Some(last) = msgs.iter_mut().rev().find(|m| m["role"] == "user") {
            if let Some(m) = last.as_object_mut() {
                m.remove("content");
            }
        }
    }
    h.update(canonical_body(&body));
    let d = h.finalize();
    u64::from_le_bytes(d[..8].try_into().unwrap_or([0; 8]))
}

/// The text the semantic cache compares: the last user message.
pub fn last_user_text(req: &ParsedRequest) -> Option<&str> {
    req.messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .map(|m| m.text.as_str())
        .filter(|t| !t.trim().is_empty())
}

fn canonical_object(m: &Map<String, Value>, skip: &[&str], out: &mut Vec<u8>) {
    let mut keys: Vec<&String> = m.keys().filter(|k| !skip.contains(&k.as_str())).collect();
    keys.sort();
    out.push(b'{');
    for (i, k) in keys.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = serde_json::to_writer(&mut *out, k);
        out.push(b':');
        canonical(&m[k], out);
    }
    out.push(b'}');
}

fn canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(m) => canonical_object(m, &[], out),
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(x, out);
            }
            out.push(b']');
        }
        other => {
            let _ = serde_json::to_writer(&mut *out, other);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(body: Value) -> ParsedRequest {
        crate::api::request::chat_request(&serde_json::to_vec(&body).unwrap()).unwrap()
    }

    #[test]
    fn keys_ignore_order_and_fields_that_do_not_change_the_answer() {
        let a = parsed(serde_json::json!({"model": "m", "temperature": 0,
            "messages": [{"role": "user", "content": "hi"}], "user": "alice"}));
        let b = parsed(
            serde_json::json!({"user": "bob", "messages": [{"content": "hi", "role": "user"}],
            "temperature": 0, "model": "m", "metadata": {"trace": "x"}}),
        );
        let k = |p: &ParsedRequest| key(p, ApiFormat::OpenAi, None);
        assert_eq!(k(&a), k(&b));
        let hotter = parsed(serde_json::json!({"model": "m", "temperature": 0.5,
            "messages": [{"role": "user", "content": "hi"}]}));
        assert_ne!(k(&a), k(&hotter));
        let other = parsed(serde_json::json!({"model": "m", "temperature": 0,
            "messages": [{"role": "user", "content": "hi!"}]}));
        assert_ne!(k(&a), k(&other));
        assert_ne!(k(&a), key(&a, ApiFormat::OpenAi, Some("team")));
        assert_ne!(k(&a), key(&a, ApiFormat::Anthropic, None));
    }

    #[test]
    fn entries_survive_the_trip_through_redis_form() {
        let e = Entry {
            format: ApiFormat::Anthropic,
            streamed: true,
            chunks: vec![
                Bytes::from_static(b"data: 1\n\n"),
                Bytes::from_static(b"data: 2\n\n"),
            ],
            usage: Usage {
                prompt_tokens: 3,
                completion_tokens: 4,
            },
            route: "auto".into(),
            target: Target {
                backend: "openai".into(),
                model: "gpt-4o".into(),
            },
        };
        let blob = serde_json::to_vec(&Stored::from_entry(&e).unwrap()).unwrap();
        let back = serde_json::from_slice::<Stored>(&blob)
            .unwrap()
            .into_entry()
            .unwrap();
        assert_eq!(back.chunks, e.chunks);
        assert_eq!(back.format, e.format);
        assert_eq!(back.usage, e.usage);
        assert_eq!(back.target, e.target);
    }
}
