//! Budgets (present only when the policy has keys): just before dispatch,
//! the request's maximum cost is reserved atomically against its key's day
//! and month budgets, so concurrent requests cannot overspend; the meter
//! settles the real cost when it is known (streams at their end, a client
//! that left with what was generated) and a failed request releases it.
//!
//! The maximum cost, an upper bound: the dearest paid target of the
//! decision at `max_tokens` times `n` (a request that sets no `max_tokens`
//! gets the backend's `default_max_tokens`, else 4096, written into the
//! request, so the upstream cannot generate more than was reserved) plus
//! the prompt at one token per UTF-8 byte (byte-level BPE never does worse)
//! with tool definitions and 1,600 tokens per image. A $0 target (the
//! local model) reserves nothing: a spent budget never blocks the free
//! path. A decision that has a local target keeps only its local targets
//! when the budget is spent (or cannot be checked with `state.on_unavailable:
//! closed`); one without goes to the policy's local model with
//! `on_budget_exhausted: local` (the default) and gets 429 with `reject`.
//!
//! A reservation dropped unsettled (the client left while a whole answer
//! was being generated upstream, which bills it anyway) is charged in full.

use super::stage::{AsyncStage, AsyncStaged};
use super::{put_header, Settle, Settlements};
use crate::api::openai::ParsedRequest;
use crate::config::{BackendConfig, OnBudgetExhausted, Policy};
use crate::error::GatewayError;
use crate::keys::Caller;
use crate::metrics::Metrics;
use crate::policy::cost::{Prices, Usage};
use crate::policy::{RouteDecision, Target};
use crate::store::guard::Shared;
use crate::store::{BudgetLimits, Lease, Period, Periods};
use axum::response::{IntoResponse, Response};
use http::Request;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tower::Layer;

/// Completion tokens allowed when neither the request nor the backend says.
const MAX_TOKENS_GUESS: u64 = 4096;
/// Prompt tokens counted per image part (a high-detail image costs less).
const IMAGE_TOKENS: u64 = 1_600;
/// How many times a failed settle is retried, and the first wait.
const SETTLE_TRIES: u32 = 6;
const SETTLE_BACKOFF: Duration = Duration::from_millis(250);

#[derive(Clone)]
pub struct BudgetLayer {
    shared: Arc<Shared>,
    prices: Arc<Prices>,
    policy: Arc<Policy>,
    metrics: Arc<Metrics>,
}

impl BudgetLayer {
    pub fn new(
        shared: Arc<Shared>,
        prices: Arc<Prices>,
        policy: Arc<Policy>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            shared,
            prices,
            policy,
            metrics,
        }
    }

    /// The most this request can cost on any of the decision's targets, in
    /// micro-dollars (rounded up), and whether `max_completion_tokens` must
    /// be written into it: it sets no limit and a paid OpenAI-compatible
    /// target would otherwise generate as much as it likes (the limit
    /// written then also reaches Anthropic targets through translation).
    fn max_cost(&self, req: &ParsedRequest, d: &RouteDecision) -> (i64, bool) {
        let one = Usage {
            prompt_tokens: 1,
            completion_tokens: 1,
        };
        let paid = |t: &Target| {
            self.prices
                .model(t)
                .is_some_and(|p| crate::policy::cost::cost(p, one) > Decimal::ZERO)
        };
        let backend = |t: &Target| self.policy.backends.get(&t.backend);
        let inject = req.max_tokens.is_none()
            && d.targets
                .iter()
                .any(|t| paid(t) && matches!(backend(t), Some(BackendConfig::Openai(_))));
        let prompt = prompt_bound(req);
        let most = d
            .targets
            .iter()
            .filter_map(|t| {
                let price = self.prices.model(t)?;
                let limit = match (req.max_tokens, backend(t)) {
                    (Some(m), _) => m,
                    (None, Some(BackendConfig::Local(l))) => l.default_max_tokens,
                    (None, Some(BackendConfig::Anthropic(a))) if !inject => a.default_max_tokens,
                    _ => MAX_TOKENS_GUESS,
                };
                let usd = crate::policy::cost::cost(
                    price,
                    Usage {
                        prompt_tokens: prompt,
                        completion_tokens: limit.saturating_mul(req.n.max(1)),
                    },
                );
                (usd * Decimal::from(1_000_000)).ceil().to_i64()
            })
            .max()
            .unwrap_or(0);
        (most, inject)
    }

    fn has_local(&self, d: &RouteDecision) -> bool {
        d.targets
            .iter()
            .any(|t| crate::policy::is_local(&self.policy, t))
    }

    /// The budget is spent (`refused_by`) or cannot be checked (`None`,
    /// fail-closed): the decision's local targets, else the policy's local
    /// model (`on_budget_exhausted: local`), else `refusal`.
    fn exhausted(
        &self,
        c: &Caller,
        decision: &RouteDecision,
        refusal: GatewayError,
    ) -> Result<Arc<RouteDecision>, GatewayError> {
        let local = if self.has_local(decision) {
            crate::policy::local_only(&self.policy, decision)
        } else {
            match self.policy.on_budget_exhausted {
                OnBudgetExhausted::Local => crate::policy::local_only(&self.policy, decision),
                OnBudgetExhausted::Reject => None,
            }
        };
        let outcome = if local.is_some() { "local" } else { "rejected" };
        self.metrics
            .key_limited
            .with_label_values(&[&c.name, "budget", outcome])
            .inc();
        local.ok_or(refusal)
    }
}

/// An upper bound of the prompt's tokens: one per UTF-8 byte of its text
/// and tool definitions, a few per message, `IMAGE_TOKENS` per image.
fn prompt_bound(req: &ParsedRequest) -> u64 {
    let text: usize = req.messages.iter().map(|m| m.text.len()).sum();
    let size = |body: &serde_json::Map<String, serde_json::Value>, keys: &[&str]| -> usize {
        keys.iter()
            .filter_map(|k| body.get(*k))
            .map(|v| v.to_string().len())
            .sum()
    };
    let tools = size(&req.raw, &["tools", "functions", "response_format"]);
    let native = req
        .native
        .as_ref()
        .map_or(0, |n| size(&n.body, &["system", "tools"]));
    let images: usize = req
        .raw
        .get("messages")
        .and_then(|m| m.as_array())
        .map_or(0, |msgs| {
            msgs.iter()
                .filter_map(|m| m.get("content")?.as_array())
                .flatten()
                .filter(|p| {
                    matches!(
                        p.get("type").and_then(|t| t.as_str()),
                        Some("image_url" | "image" | "input_image")
                    )
                })
                .count()
        });
    (text + tools + native) as u64 + 8 * req.messages.len() as u64 + IMAGE_TOKENS * images as u64
}

/// What `before` leaves for `after`.
pub enum Carry {
    Nothing,
    Reserved(Arc<Reservation>),
    /// Rerouted to the local model: say so on the answer.
    Rerouted,
}

/// The budget around the next service.
pub type Budget<S> = AsyncStaged<BudgetLayer, S>;

impl<S> Layer<S> for BudgetLayer {
    type Service = Budget<S>;
    fn layer(&self, inner: S) -> Budget<S> {
        AsyncStaged::new(self.clone(), inner)
    }
}

impl<B: Send + 'static> AsyncStage<B> for BudgetLayer {
    type Carry = Carry;

    async fn before(&self, req: &mut Request<B>) -> Result<Carry, Response> {
        let x = req.extensions();
        let (Some(c), Some(parsed), Some(decision)) = (
            x.get::<Caller>().cloned(),
            x.get::<ParsedRequest>(),
            x.get::<Arc<RouteDecision>>().cloned(),
        ) else {
            return Ok(Carry::Nothing);
        };
        if !c.key.has_budget() {
            return Ok(Carry::Nothing);
        }
        let (amount, inject) = self.max_cost(parsed, &decision);
        if amount == 0 {
            return Ok(Carry::Nothing); // the free path
        }
        let micro =
            |d: Option<Decimal>| d.and_then(|d| (d * Decimal::from(1_000_000)).floor().to_i64());
        let limits = BudgetLimits {
            day: micro(c.key.budget_usd_day),
            month: micro(c.key.budget_usd_month),
        };
        let periods = Periods::now();
        let lease = Lease::new(amount);
        let r = self
            .shared
            .store
            .reserve(&c.name, &periods, &lease, limits)
            .await;
        let r = match self.shared.judge("budget", r) {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(Carry::Nothing), // store down, failing open
            Err(down) => {
                // Fail-closed: the free local path still serves.
                let local = self
                    .exhausted(&c, &decision, down)
                    .map_err(IntoResponse::into_response)?;
                req.extensions_mut().insert(local);
                return Ok(Carry::Rerouted);
            }
        };
        for (period, left) in [("day", r.day_left), ("month", r.month_left)] {
            if let Some(left) = left {
                self.metrics
                    .key_budget_remaining
                    .with_label_values(&[&c.name, period])
                    .set(left.max(0) as f64 / 1e6);
            }
        }
        if !r.ok {
            let (which, period) = match r.refused_by {
                Some(Period::Month) => ("monthly", Period::Month),
                _ => ("daily", Period::Day),
            };
            let refusal = GatewayError::RateLimited {
                message: format!("key `{}` has spent its {which} budget", c.name),
                retry_after: Duration::from_millis(crate::store::until_next(
                    period,
                    crate::store::now_ms(),
                )),
            };
            let local = self
                .exhausted(&c, &decision, refusal)
                .map_err(IntoResponse::into_response)?;
            req.extensions_mut().insert(local);
            return Ok(Carry::Rerouted);
        }
        if inject {
            // What was reserved is what the upstream may generate.
            if let Some(p) = req.extensions_mut().get_mut::<ParsedRequest>() {
                p.raw.insert(
                    "max_completion_tokens".into(),
                    serde_json::json!(MAX_TOKENS_GUESS),
                );
            }
        }
        Ok(Carry::Reserved(Arc::new(Reservation {
            shared: self.shared.clone(),
            name: c.name.clone(),
            periods,
            lease,
            settled: AtomicBool::new(false),
        })))
    }

    fn after(&self, carry: Carry, mut resp: Response) -> Response {
        match carry {
            Carry::Nothing => {}
            Carry::Reserved(r) => Settlements::add(&mut resp, r),
            Carry::Rerouted => put_header(
                resp.headers_mut(),
                "x-slmgate-budget",
                "exhausted; answered by the local model",
            ),
        }
        resp
    }
}

/// A request's reservation: settled with the real cost by the meter; one
/// dropped unsettled (the client left while the upstream generated a whole
/// answer, which it bills) is charged in full.
pub struct Reservation {
    shared: Arc<Shared>,
    name: Arc<str>,
    periods: Periods,
    lease: Lease,
    settled: AtomicBool,
}

impl Reservation {
    fn finish(&self, spent: i64) {
        if self.settled.swap(true, Ordering::AcqRel) {
            return;
        }
        if self
            .shared
            .store
            .settle_local(&self.name, &self.periods, &self.lease, spent)
        {
            return;
        }
        let (shared, name, periods, lease) = (
            self.shared.clone(),
            self.name.clone(),
            self.periods.clone(),
            self.lease.clone(),
        );
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return; // no runtime left: the lease expires at its deadline
        };
        let pending = shared.pending();
        rt.spawn(async move {
            let _pending = pending;
            // Settling is idempotent (the lease is removed once), so a
            // failure is retried; if Redis stays away the lease expires.
            let mut wait = SETTLE_BACKOFF;
            for _ in 0..SETTLE_TRIES {
                let r = shared.store.settle(&name, &periods, &lease, spent).await;
                if shared.judge("budget_settle", r).is_ok_and(|v| v.is_some()) {
                    return;
                }
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
        });
    }
}

impl Settle for Reservation {
    fn settle(&self, _usage: Usage, cost: Decimal) {
        let micro = (cost * Decimal::from(1_000_000))
            .ceil()
            .to_i64()
            .unwrap_or(0);
        self.finish(micro.max(0));
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.finish(self.lease.amount);
    }
}
