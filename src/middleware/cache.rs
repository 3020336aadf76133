//! The exact response cache, right after parsing (and the key's limits):
//! a hit skips triage, policy, budget and dispatch and goes up through the
//! edge and the meter like any answer (backend `cache`, $0 paid, the saving
//! counted at what the request would have cost); a miss is stored when its
//! answer completes (a stream at its end, never a failed or abandoned one).
//! Every response through here says `x-slmgate-cache: hit | miss | bypass`.
//! `Cache-Control: no-cache` skips the lookup, `no-store` the storing.

use super::body::{tap, Out, Tap};
use super::dispatch::{answer, Dispatched, ReplyShape, ReplyUsage};
use super::put_header;
use super::stage::{AsyncStage, AsyncStaged};
use crate::api::openai::ParsedRequest;
use crate::api::ApiFormat;
use crate::backend::{BackendReply, ReplyBody, UsageCell};
use crate::cache::{key, Entry, ExactCache, Tier};
use crate::config::{CacheMode, Policy};
use crate::error::{failure, GatewayError};
use crate::keys::Caller;
use crate::metrics::Metrics;
use crate::policy::cost::{to_f64, Prices};
use crate::policy::{Requested, RouteDecision, Target};
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use std::sync::Arc;
use std::time::Duration;
use tower::Layer;

#[derive(Clone)]
pub struct CacheLayer {
    cache: Arc<ExactCache>,
    policy: Arc<Policy>,
    prices: Arc<Prices>,
    metrics: Arc<Metrics>,
}

impl CacheLayer {
    pub fn new(
        cache: Arc<ExactCache>,
        policy: Arc<Policy>,
        prices: Arc<Prices>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            cache,
            policy,
            prices,
            metrics,
        }
    }

    /// Whether the cache may answer `req` on what it asked for.
    fn cacheable(&self, req: &ParsedRequest, requested: Option<&Requested>) -> bool {
        cacheable(route_mode(&self.policy, requested), req)
    }

    fn count(&self, cache: &str, result: &str) {
        self.metrics.cache.with_label_values(&[cache, result]).inc();
    }
}

/// The cache mode for what was asked: the route's own, else the exact
/// cache's (`deterministic` when there is none).
pub(crate) fn route_mode(policy: &Policy, requested: Option<&Requested>) -> CacheMode {
    let default = policy
        .cache
        .as_ref()
        .and_then(|c| c.exact.as_ref())
        .map(|e| e.mode)
        .unwrap_or_default();
    match requested {
        Some(Requested::Route { name, .. }) => policy
            .routes
            .get(name)
            .and_then(|r| r.cache)
            .unwrap_or(default),
        _ => default,
    }
}

/// Whether `mode` admits `req`.
pub(crate) fn cacheable(mode: CacheMode, req: &ParsedRequest) -> bool {
    match mode {
        CacheMode::Off => false,
        CacheMode::Always => true,
        CacheMode::Deterministic => req.temperature == Some(0.0) || req.seed.is_some(),
    }
}

/// A cached answer as dispatch would have given it (backend `cache`, what
/// it saved counted for `cache`).
pub(crate) fn cached_answer(
    entry: &Entry,
    prices: &Prices,
    metrics: &Metrics,
    cache: &str,
) -> Response {
    let (paid, _) = prices.cost(&entry.target, entry.usage);
    metrics
        .cache_saved
        .with_label_values(&[cache])
        .inc_by(to_f64(paid));
    let decision = Arc::new(RouteDecision {
        route: entry.route.clone(),
        targets: vec![Target {
            backend: "cache".into(),
            model: entry.target.model.clone(),
        }],
    });
    let body = if entry.streamed {
        let usage = Arc::new(UsageCell::default());
        usage.set(entry.usage);
        // All the events in one chunk: the layers above handle several
        // events per chunk, and one chunk costs them one pass.
        let all: Result<Bytes, GatewayError> = Ok(entry.chunks.concat().into());
        ReplyBody::Stream {
            events: Box::pin(futures::stream::once(async move { all })),
            usage,
        }
    } else {
        ReplyBody::Full {
            bytes: entry.chunks.concat().into(),
            usage: entry.usage,
        }
    };
    let reply = BackendReply {
        body,
        format: entry.format,
        upstream_wait: Duration::ZERO,
    };
    let mut resp = answer(decision, 0, "cache", reply);
    put_header(resp.headers_mut(), "x-slmgate-cache", "hit");
    put_header(resp.headers_mut(), "x-slmgate-cache-kind", cache);
    put_header(
        resp.headers_mut(),
        "x-slmgate-cache-origin",
        &format!("{}/{}", entry.target.backend, entry.target.model),
    );
    resp
}

/// `Cache-Control` directives from the client: (no-cache, no-store).
pub(crate) fn directives(h: &HeaderMap) -> (bool, bool) {
    let mut out = (false, false);
    for v in h.get_all(http::header::CACHE_CONTROL) {
        for d in v.to_str().unwrap_or("").split(',') {
            match d.trim().to_ascii_lowercase().as_str() {
                "no-cache" => out.0 = true,
                "no-store" => out.1 = true,
                _ => {}
            }
        }
    }
    out
}

/// What `before` leaves for `after`.
pub enum Carry {
    /// Not for the cache: `bypass`.
    Bypass,
    /// Looked up (`miss`) or not (`bypass`, no-cache); stored unless `no-store`.
    Store {
        key: [u8; 32],
        said: &'static str,
        store: bool,
    },
}

pub type Cache<S> = AsyncStaged<CacheLayer, S>;

impl<S> Layer<S> for CacheLayer {
    type Service = Cache<S>;
    fn layer(&self, inner: S) -> Cache<S> {
        AsyncStaged::new(self.clone(), inner)
    }
}

impl<B: Send + 'static> AsyncStage<B> for CacheLayer {
    type Carry = Carry;

    async fn before(&self, req: &mut Request<B>) -> Result<Carry, Response> {
        let x = req.extensions();
        let Some(parsed) = x.get::<ParsedRequest>() else {
            return Ok(Carry::Bypass);
        };
        let requested = x.get::<Arc<Requested>>().map(|r| &**r);
        if !self.cacheable(parsed, requested) {
            self.count("exact", "bypass");
            return Ok(Carry::Bypass);
        }
        let client = x.get::<ApiFormat>().copied().unwrap_or(ApiFormat::OpenAi);
        let caller = match self.cache.config.share_across_keys {
            true => None,
            false => x.get::<Caller>().map(|c| c.name.clone()),
        };
        let key = key(parsed, client, caller.as_deref());
        let (no_cache, no_store) = directives(req.headers());
        if no_cache {
            self.count("exact", "bypass");
            return Ok(Carry::Store {
                key,
                said: "bypass",
                store: !no_store,
            });
        }
        match self.cache.get(&key).await {
            Some((entry, tier)) => {
                self.count("exact", "hit");
                if tier == Tier::Redis {
                    self.count("exact_redis", "hit");
                }
                Err(cached_answer(&entry, &self.prices, &self.metrics, "exact"))
            }
            None => {
                self.count("exact", "miss");
                Ok(Carry::Store {
                    key,
                    said: "miss",
                    store: !no_store,
                })
            }
        }
    }

    fn after(&self, carry: Carry, mut resp: Response) -> Response {
        // A semantic hit below already said so.
        if resp
            .headers()
            .get("x-slmgate-cache")
            .is_some_and(|v| v == "hit")
        {
            return resp;
        }
        let (key, said, store) = match carry {
            Carry::Bypass => {
                put_header(resp.headers_mut(), "x-slmgate-cache", "bypass");
                return resp;
            }
            Carry::Store { key, said, store } => (key, said, store),
        };
        put_header(resp.headers_mut(), "x-slmgate-cache", said);
        if !store {
            return resp;
        }
        let cache = self.cache.clone();
        record(
            resp,
            self.cache.config.max_entry_bytes as usize,
            Box::new(move |entry| cache.put(key, entry)),
        )
    }
}

/// Where a completed answer goes.
pub(crate) type Store = Box<dyn FnOnce(Entry) + Send>;

/// Copy a successful fresh answer as it passes to the client and `store`
/// it once complete (not an error, a failed or abandoned stream, a cached
/// answer, or one above `limit` bytes).
pub(crate) fn record(resp: Response, limit: usize, store: Store) -> Response {
    let answered = resp.extensions().get::<Dispatched>().cloned();
    let shape = resp.extensions().get::<ReplyShape>().copied();
    let (Some(d), Some(shape)) = (answered, shape) else {
        return resp;
    };
    if resp.status() != StatusCode::OK || failure(&resp).is_some() || d.backend_kind == "cache" {
        return resp;
    }
    let recorder = Recorder {
        store: Some(store),
        chunks: Vec::new(),
        size: 0,
        limit,
        spoilt: false,
        shape,
        route: d.decision.route.clone(),
        target: d.target().clone(),
        usage: d.usage,
    };
    let (parts, body) = resp.into_parts();
    Response::from_parts(parts, tap(body, recorder))
}

/// Keeps a copy of the answer as it passes; stores it when it completes.
struct Recorder {
    store: Option<Store>,
    chunks: Vec<Bytes>,
    size: usize,
    limit: usize,
    /// Too big, or failed: not stored.
    spoilt: bool,
    shape: ReplyShape,
    route: String,
    target: Target,
    usage: ReplyUsage,
}

impl Tap for Recorder {
    fn data(&mut self, chunk: Bytes, out: &mut Out) {
        if !self.spoilt {
            self.size += chunk.len();
            if self.size > self.limit {
                self.spoilt = true;
                self.chunks = Vec::new();
            } else {
                self.chunks.push(chunk.clone());
            }
        }
        out.push_back(chunk);
    }

    fn failed(&mut self, e: GatewayError, _: &mut Out) -> Option<GatewayError> {
        self.spoilt = true;
        Some(e)
    }

    fn end(&mut self, _: &mut Out) {
        if self.spoilt {
            return;
        }
        // A stream is kept only when the upstream reported its usage (it
        // ran to its end); an estimate means it was cut short.
        let usage = match &self.usage {
            ReplyUsage::Whole(u) => *u,
            ReplyUsage::Streamed(cell) if cell.reported() => cell.get().unwrap_or_default(),
            ReplyUsage::Streamed(_) => return,
        };
        let Some(store) = self.store.take() else {
            return;
        };
        store(Entry {
            format: self.shape.format,
            streamed: self.shape.streamed,
            chunks: std::mem::take(&mut self.chunks),
            usage,
            route: std::mem::take(&mut self.route),
            target: self.target.clone(),
        });
    }
}
