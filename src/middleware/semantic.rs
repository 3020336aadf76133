//! The semantic cache, after triage (on routes with `semantic_cache: true`
//! and requests the route's cache mode admits): the last user message is
//! embedded with the triage's own encoder (MiniLM; no second model), and
//! an answer given to a request that differed only in that message is
//! reused when the two messages' cosine similarity reaches the threshold
//! and their numbers, negation, directional words and names match
//! (`cache::guards`). A miss is stored when its answer completes.

use super::cache::{cacheable, cached_answer, directives, record, route_mode};
use super::put_header;
use super::stage::{AsyncStage, AsyncStaged};
use crate::api::openai::ParsedRequest;
use crate::api::ApiFormat;
use crate::cache::guards::Signature;
use crate::cache::semantic::SemanticIndex;
use crate::cache::{bucket, last_user_text};
use crate::classifier::serve::Triager;
use crate::config::{Policy, SemanticCacheConfig};
use crate::keys::Caller;
use crate::metrics::Metrics;
use crate::policy::cost::Prices;
use crate::policy::Requested;
use axum::response::Response;
use http::Request;
use std::sync::Arc;
use std::time::Duration;
use tower::Layer;

/// The index and its settings.
pub struct SemanticCache {
    pub index: SemanticIndex,
    pub config: SemanticCacheConfig,
}

impl SemanticCache {
    pub fn new(config: SemanticCacheConfig) -> SemanticCache {
        SemanticCache {
            index: SemanticIndex::new(config.max_entries, Duration::from_secs(config.ttl_secs)),
            config,
        }
    }
}

#[derive(Clone)]
pub struct SemanticLayer {
    cache: Arc<SemanticCache>,
    triage: Arc<Triager>,
    policy: Arc<Policy>,
    prices: Arc<Prices>,
    metrics: Arc<Metrics>,
}

impl SemanticLayer {
    pub fn new(
        cache: Arc<SemanticCache>,
        triage: Arc<Triager>,
        policy: Arc<Policy>,
        prices: Arc<Prices>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            cache,
            triage,
            policy,
            prices,
            metrics,
        }
    }

    fn count(&self, result: &str) {
        self.metrics
            .cache
            .with_label_values(&["semantic", result])
            .inc();
    }
}

/// What a miss stores its answer under.
pub struct Miss {
    bucket: u64,
    embedding: Vec<f32>,
    signature: Signature,
    /// Not with `Cache-Control: no-store`.
    store: bool,
}

pub type Semantic<S> = AsyncStaged<SemanticLayer, S>;

impl<S> Layer<S> for SemanticLayer {
    type Service = Semantic<S>;
    fn layer(&self, inner: S) -> Semantic<S> {
        AsyncStaged::new(self.clone(), inner)
    }
}

impl<B: Send + 'static> AsyncStage<B> for SemanticLayer {
    type Carry = Option<Miss>;

    async fn before(&self, req: &mut Request<B>) -> Result<Option<Miss>, Response> {
        let x = req.extensions();
        let (Some(parsed), Some(requested)) = (x.get::<ParsedRequest>(), x.get::<Arc<Requested>>())
        else {
            return Ok(None);
        };
        let Requested::Route { name, .. } = &**requested else {
            return Ok(None);
        };
        if !self
            .policy
            .routes
            .get(name)
            .is_some_and(|r| r.semantic_cache)
        {
            return Ok(None);
        }
        let mode = route_mode(&self.policy, Some(requested));
        let (no_cache, no_store) = directives(req.headers());
        if !cacheable(mode, parsed) || no_cache {
            self.count("bypass");
            return Ok(None);
        }
        let Some(text) = last_user_text(parsed) else {
            return Ok(None);
        };
        let client = x.get::<ApiFormat>().copied().unwrap_or(ApiFormat::OpenAi);
        let caller = x.get::<Caller>().map(|c| c.name.clone());
        let shared_keys = self
            .policy
            .cache
            .as_ref()
            .and_then(|c| c.exact.as_ref())
            .is_some_and(|e| e.share_across_keys);
        let caller = if shared_keys { None } else { caller };
        let bucket = bucket(parsed, client, caller.as_deref());
        let engine = self.triage.engine().clone();
        let owned = text.to_string();
        let embedding = self
            .triage
            .off_runtime(move || engine.embed(&owned))
            .await
            .flatten();
        let Some(embedding) = embedding else {
            self.count("bypass"); // no encoder (features triage)
            return Ok(None);
        };
        let signature = Signature::of(text);
        let guard = self.cache.config.guards.then_some(&signature);
        match self
            .cache
            .index
            .lookup(bucket, &embedding, guard, self.cache.config.threshold)
        {
            Some(found) => {
                self.count("hit");
                let mut resp = cached_answer(&found.entry, &self.prices, &self.metrics, "semantic");
                put_header(
                    resp.headers_mut(),
                    "x-slmgate-cache-similarity",
                    &format!("{:.4}", found.similarity),
                );
                Err(resp)
            }
            None => {
                self.count("miss");
                Ok(Some(Miss {
                    bucket,
                    embedding,
                    signature,
                    store: !no_store,
                }))
            }
        }
    }

    fn after(&self, carry: Option<Miss>, resp: Response) -> Response {
        let Some(miss) = carry else {
            return resp;
        };
        let mut resp = resp;
        put_header(resp.headers_mut(), "x-slmgate-cache", "miss");
        if !miss.store {
            return resp;
        }
        let cache = self.cache.clone();
        record(
            resp,
            self.cache.config.max_entry_bytes as usize,
            Box::new(move |entry| {
                cache.index.insert(
                    miss.bucket,
                    &miss.embedding,
                    miss.signature,
                    Arc::new(entry),
                )
            }),
        )
    }
}
