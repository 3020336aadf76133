//! A caller's model allow-list and rate limits (present only when the
//! policy has keys), after parse and before triage: a model the key may not
//! name is a 403; over `rpm` (a sliding minute) or `tpm` (tokens of the
//! last minute) a 429 with `Retry-After`. Counted in the shared store, so
//! the limits hold across replicas; the tokens an answer used are added
//! when the meter knows them.

use super::stage::{AsyncStage, AsyncStaged};
use super::{Settle, Settlements};
use crate::error::GatewayError;
use crate::keys::Caller;
use crate::metrics::Metrics;
use crate::policy::cost::Usage;
use crate::policy::Routing;
use crate::store::guard::Shared;
use axum::response::{IntoResponse, Response};
use http::Request;
use rust_decimal::Decimal;
use std::sync::Arc;
use tower::Layer;

#[derive(Clone)]
pub struct LimitsLayer {
    routing: Arc<Routing>,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
}

impl LimitsLayer {
    pub fn new(routing: Arc<Routing>, shared: Arc<Shared>, metrics: Arc<Metrics>) -> Self {
        Self {
            routing,
            shared,
            metrics,
        }
    }

    fn refuse(&self, c: &Caller, limit: &str, e: GatewayError) -> GatewayError {
        self.metrics
            .key_limited
            .with_label_values(&[&c.name, limit, "rejected"])
            .inc();
        e
    }
}

/// The limits around the next service.
pub type Limits<S> = AsyncStaged<LimitsLayer, S>;

impl<S> Layer<S> for LimitsLayer {
    type Service = Limits<S>;
    fn layer(&self, inner: S) -> Limits<S> {
        AsyncStaged::new(self.clone(), inner)
    }
}

impl<B: Send + 'static> AsyncStage<B> for LimitsLayer {
    /// The caller whose tokens are counted when the answer is metered.
    type Carry = Option<Caller>;

    async fn before(&self, req: &mut Request<B>) -> Result<Option<Caller>, Response> {
        let Some(c) = req.extensions().get::<Caller>().cloned() else {
            return Ok(None); // no key (an open policy): nothing to limit
        };
        let model = req
            .extensions()
            .get::<crate::api::openai::ParsedRequest>()
            .map(|p| p.model.clone())
            .unwrap_or_default();
        if !c.may_use(&self.routing, &model) {
            return Err(self
                .refuse(
                    &c,
                    "model",
                    GatewayError::Forbidden(format!(
                        "key `{}` may not use model `{model}`",
                        c.name
                    )),
                )
                .into_response());
        }
        let (rpm, tpm) = (c.key.rpm, c.key.tpm);
        if rpm.is_none() && tpm.is_none() {
            return Ok(None);
        }
        // Both rates in one round trip to the store.
        let r = self.shared.store.admit(&c.name, rpm, tpm).await;
        match self.shared.judge("limits", r) {
            Err(unavailable) => return Err(unavailable.into_response()),
            Ok(Some(Some((limit, retry_after)))) => {
                let e = GatewayError::RateLimited {
                    message: format!(
                        "key `{}` is over its {limit} limit; retry in {} s",
                        c.name,
                        retry_after.as_secs().max(1)
                    ),
                    retry_after,
                };
                return Err(self.refuse(&c, limit, e).into_response());
            }
            Ok(_) => {} // admitted, or the store is down and failing open
        }
        Ok(tpm.is_some().then_some(c))
    }

    fn after(&self, caller: Option<Caller>, mut resp: Response) -> Response {
        if let Some(c) = caller {
            let count = Arc::new(CountTokens {
                name: c.name.clone(),
                shared: self.shared.clone(),
            });
            Settlements::add(&mut resp, count);
        }
        resp
    }
}

/// Adds an answer's tokens to its key's minute.
struct CountTokens {
    name: Arc<str>,
    shared: Arc<Shared>,
}

impl Settle for CountTokens {
    fn settle(&self, usage: Usage, _cost: Decimal) {
        // Saturating: the counts are the upstream's word.
        let tokens = usage.prompt_tokens.saturating_add(usage.completion_tokens);
        if tokens == 0 || self.shared.store.add_tokens_local(&self.name, tokens) {
            return;
        }
        let (name, shared) = (self.name.clone(), self.shared.clone());
        tokio::spawn(async move {
            let r = shared.store.add_tokens(&name, tokens).await;
            let _ = shared.judge("tpm_add", r);
        });
    }
}
