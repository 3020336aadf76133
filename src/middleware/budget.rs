//! Budgets (present only when the policy has keys): just before dispatch,
//! the request's maximum cost is reserved atomically against its key's day
//! and month budgets, so concurrent requests cannot overspend; the meter
//! settles the real cost when it is known (streams at their end, a client
//! that left with what was generated) and a failed request releases it.
//!
//! The maximum cost: the dearest cloud target of the decision at
//! `max_tokens` (else the backend's `default_max_tokens`, else 4096) plus
//! the prompt at one token per three characters. A $0 target (the local
//! model) reserves nothing: a spent budget never blocks the free path, and
//! with `on_budget_exhausted: local` (the default) a request whose
//! reservation fails goes to the local model instead; `reject` answers 429.

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
use crate::store::{BudgetLimits, Periods};
use axum::response::{IntoResponse, Response};
use http::Request;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tower::Layer;

/// Completion tokens assumed when neither the request nor the backend says.
const MAX_TOKENS_GUESS: u64 = 4096;

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

    fn is_local(&self, t: &Target) -> bool {
        matches!(
            self.policy.backends.get(&t.backend),
            Some(BackendConfig::Local(_))
        )
    }

    /// The most this request can cost on any of the decision's targets, in
    /// micro-dollars (rounded up).
    fn max_cost(&self, req: &ParsedRequest, d: &RouteDecision) -> i64 {
        let chars: usize = req.messages.iter().map(|m| m.text.chars().count()).sum();
        let prompt = (chars as u64).div_ceil(3) + 8 * req.messages.len() as u64;
        d.targets
            .iter()
            .filter_map(|t| {
                let price = self.prices.model(t)?;
                let completion =
                    req.max_tokens
                        .unwrap_or_else(|| match self.policy.backends.get(&t.backend) {
                            Some(BackendConfig::Anthropic(a)) => a.default_max_tokens,
                            Some(BackendConfig::Local(l)) => l.default_max_tokens,
                            _ => MAX_TOKENS_GUESS,
                        });
                let usd = crate::policy::cost::cost(
                    price,
                    Usage {
                        prompt_tokens: prompt,
                        completion_tokens: completion,
                    },
                );
                (usd * Decimal::from(1_000_000)).ceil().to_i64()
            })
            .max()
            .unwrap_or(0)
    }

    /// The decision with only its local targets (else the policy's first
    /// local model); `None` when the policy has no local model.
    fn local_only(&self, d: &RouteDecision) -> Option<Arc<RouteDecision>> {
        let mut targets: Vec<Target> = d
            .targets
            .iter()
            .filter(|t| self.is_local(t))
            .cloned()
            .collect();
        if targets.is_empty() {
            let (b, cfg) = self
                .policy
                .backends
                .iter()
                .find(|(_, c)| matches!(c, BackendConfig::Local(_)))?;
            let m = cfg.models().keys().next()?;
            targets.push(Target {
                backend: b.clone(),
                model: m.clone(),
            });
        }
        Some(Arc::new(RouteDecision {
            route: d.route.clone(),
            targets,
        }))
    }

    // The Err is the response itself, built once and sent as is (no boxing on the hot path).
    #[allow(clippy::result_large_err)]
    fn exhausted(
        &self,
        c: &Caller,
        req_decision: Option<Arc<RouteDecision>>,
    ) -> Result<Arc<RouteDecision>, Response> {
        let local = match self.policy.on_budget_exhausted {
            OnBudgetExhausted::Local => req_decision.as_deref().and_then(|d| self.local_only(d)),
            OnBudgetExhausted::Reject => None,
        };
        let outcome = if local.is_some() { "local" } else { "rejected" };
        self.metrics
            .key_limited
            .with_label_values(&[&c.name, "budget", outcome])
            .inc();
        local.ok_or_else(|| {
            GatewayError::RateLimited {
                message: format!("key `{}` has spent its budget", c.name),
                retry_after: until_tomorrow(),
            }
            .into_response()
        })
    }
}

/// Seconds to the next UTC midnight, when the day's budget starts over.
fn until_tomorrow() -> Duration {
    let ms = crate::store::now_ms();
    Duration::from_millis(86_400_000 - ms % 86_400_000)
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
        let amount = self.max_cost(parsed, &decision);
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
        let r = self
            .shared
            .store
            .reserve(&c.name, &periods, amount, limits)
            .await;
        let Some(r) = self
            .shared
            .judge("budget", r)
            .map_err(IntoResponse::into_response)?
        else {
            return Ok(Carry::Nothing); // store down, failing open
        };
        for (period, left) in [("day", r.day_left), ("month", r.month_left)] {
            if let Some(left) = left {
                self.metrics
                    .key_budget_remaining
                    .with_label_values(&[&c.name, period])
                    .set(left as f64 / 1e6);
            }
        }
        if !r.ok {
            let local = self.exhausted(&c, Some(decision))?;
            req.extensions_mut().insert(local);
            return Ok(Carry::Rerouted);
        }
        Ok(Carry::Reserved(Arc::new(Reservation {
            shared: self.shared.clone(),
            name: c.name.clone(),
            periods,
            amount,
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

/// A request's reservation: settled with the real cost by the meter,
/// released in full if it never is (the answer was dropped unmetered).
pub struct Reservation {
    shared: Arc<Shared>,
    name: Arc<str>,
    periods: Periods,
    amount: i64,
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
            .settle_local(&self.name, &self.periods, self.amount, spent)
        {
            return;
        }
        let (shared, name, periods, amount) = (
            self.shared.clone(),
            self.name.clone(),
            self.periods.clone(),
            self.amount,
        );
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            let r = shared.store.settle(&name, &periods, amount, spent).await;
            let _ = shared.judge("budget_settle", r);
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
        self.finish(0);
    }
}
