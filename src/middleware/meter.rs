//! Metering wraps the answer: `slmgate_requests_total` is counted here and
//! nowhere else, exactly once per request — an error response when it
//! passes, a whole answer when it passes, a stream when it ends (200),
//! fails mid-stream (that error's status, from the one error map) or is
//! dropped by a client that went away (499). Also tokens, cost, savings,
//! latency, time to first token, the gateway's own overhead, and the
//! `x-slmgate-cost-usd` / `x-slmgate-overhead-ms` headers.

use super::body::{tap, Out, Tap};
use super::dispatch::{Dispatched, ReplyUsage};
use super::stage::{Stage, Staged};
use super::{put_header, Settlements, Started};
use crate::error::{failure, GatewayError};
use crate::keys::Caller;
use crate::metrics::Metrics;
use crate::policy::cost::{self, Prices, Usage};
use crate::policy::{RouteDecision, Target};
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{Request, StatusCode};
use rust_decimal::Decimal;
use std::sync::Arc;
use std::time::Instant;
use tower::Layer;

/// Where the numbers go, and the prices they are computed with.
#[derive(Clone)]
pub struct MeterLayer {
    metrics: Arc<Metrics>,
    prices: Arc<Prices>,
}

impl MeterLayer {
    pub fn new(metrics: Arc<Metrics>, prices: Arc<Prices>) -> Self {
        Self { metrics, prices }
    }
}

/// The meter around the next service.
pub type Meter<S> = Staged<MeterLayer, S>;

impl<S> Layer<S> for MeterLayer {
    type Service = Meter<S>;
    fn layer(&self, inner: S) -> Meter<S> {
        Staged::new(self.clone(), inner)
    }
}

impl<B: Send + 'static> Stage<B> for MeterLayer {
    /// When the request arrived.
    type Carry = Instant;

    fn before(&self, req: &mut Request<B>) -> Result<Instant, Response> {
        Ok(req
            .extensions()
            .get::<Started>()
            .map_or_else(Instant::now, |s| s.0))
    }

    async fn after(&self, started: Instant, resp: Response) -> Response {
        self.answer(resp, started)
    }
}

/// One request's meter readings, recorded once.
struct Reading {
    m: MeterLayer,
    /// The route taken (none when the request failed before decide).
    decision: Option<Arc<RouteDecision>>,
    /// Which of its targets answered.
    answered: Option<usize>,
    started: Instant,
    /// The key's name, when keys are on (`none` for a request refused 401).
    key: Option<Arc<str>>,
    /// Who counts what this request used (limits, budgets).
    settlements: Option<Settlements>,
}

impl Reading {
    fn route(&self) -> &str {
        self.decision.as_ref().map_or("none", |d| d.route.as_str())
    }

    fn target(&self) -> Option<&Target> {
        self.decision.as_ref()?.targets.get(self.answered?)
    }

    fn labels(&self) -> (&str, &str) {
        self.target()
            .map_or(("none", "none"), |t| (t.backend.as_str(), t.model.as_str()))
    }

    /// Count the request (and for its key), then tell whoever counts what it
    /// used (limits, budgets). Returns its cost.
    fn record(&self, usage: Option<Usage>, status: StatusCode) -> Decimal {
        let paid = self.count(usage, status);
        let used = usage.unwrap_or_default();
        if let Some(key) = &self.key {
            let m = &self.m.metrics;
            m.key_requests
                .with_label_values(&[key, status.as_str()])
                .inc();
            if used != Usage::default() {
                m.key_tokens
                    .with_label_values(&[key, "input"])
                    .inc_by(used.prompt_tokens);
                m.key_tokens
                    .with_label_values(&[key, "output"])
                    .inc_by(used.completion_tokens);
                m.key_spend
                    .with_label_values(&[key])
                    .inc_by(cost::to_f64(paid));
            }
        }
        if let Some(s) = &self.settlements {
            s.run(used, paid);
        }
        paid
    }

    /// The request's counters; for an answered one also tokens, cost,
    /// savings and duration. Returns the cost.
    fn count(&self, usage: Option<Usage>, status: StatusCode) -> Decimal {
        let metrics = &self.m.metrics;
        let (b, model) = self.labels();
        metrics
            .requests
            .with_label_values(&[self.route(), b, model, status.as_str()])
            .inc();
        let (Some(t), Some(usage)) = (self.target(), usage) else {
            return Decimal::ZERO;
        };
        let (paid, saved) = self.m.prices.cost(t, usage);
        metrics
            .tokens
            .with_label_values(&[b, model, "input"])
            .inc_by(usage.prompt_tokens);
        metrics
            .tokens
            .with_label_values(&[b, model, "output"])
            .inc_by(usage.completion_tokens);
        metrics
            .cost
            .with_label_values(&[b, model])
            .inc_by(cost::to_f64(paid));
        metrics
            .savings
            .with_label_values(&[b, model])
            .inc_by(cost::to_f64(saved));
        metrics
            .duration
            .with_label_values(&[b])
            .observe(self.started.elapsed().as_secs_f64());
        paid
    }

    fn ttft(&self) {
        let (b, _) = self.labels();
        self.m
            .metrics
            .ttft
            .with_label_values(&[b])
            .observe(self.started.elapsed().as_secs_f64());
    }
}

impl MeterLayer {
    fn answer(&self, mut resp: Response, started: Instant) -> Response {
        let dispatched = resp.extensions().get::<Dispatched>().cloned();
        // What answered says which route it took; an error before dispatch
        // has the decision (if decide ran) on the response.
        let decision = match &dispatched {
            Some(d) => Some(d.decision.clone()),
            None => resp.extensions().get::<Arc<RouteDecision>>().cloned(),
        };
        let key = match resp.extensions().get::<Caller>() {
            Some(c) => Some(c.name.clone()),
            None => (resp.status() == StatusCode::UNAUTHORIZED).then(|| Arc::from("none")),
        };
        let mut reading = Reading {
            m: self.clone(),
            decision,
            answered: None,
            started,
            key,
            settlements: resp.extensions().get::<Settlements>().cloned(),
        };
        let Some(d) = dispatched.filter(|_| failure(&resp).is_none()) else {
            reading.record(None, resp.status());
            return resp;
        };
        reading.answered = Some(d.index);
        let overhead = started.elapsed().saturating_sub(d.upstream_wait);
        self.metrics.overhead.observe(overhead.as_secs_f64());
        put_header(
            resp.headers_mut(),
            "x-slmgate-overhead-ms",
            &format!("{:.3}", overhead.as_secs_f64() * 1000.0),
        );
        match d.usage {
            ReplyUsage::Whole(usage) => {
                reading.ttft();
                let paid = reading.record(Some(usage), resp.status());
                put_header(
                    resp.headers_mut(),
                    "x-slmgate-cost-usd",
                    &paid.normalize().to_string(),
                );
                resp
            }
            ReplyUsage::Streamed(cell) => {
                let above = StreamOutcome::default();
                resp.extensions_mut().insert(above.clone());
                let (parts, body) = resp.into_parts();
                Response::from_parts(parts, metered(body, reading, cell, above))
            }
        }
    }
}

/// How a metered stream ended, when a layer above the meter ended it (the
/// client-format edge, on a failure only it sees): the status to count
/// (response extension of streamed answers).
#[derive(Debug, Clone, Default)]
pub struct StreamOutcome(Arc<std::sync::OnceLock<StatusCode>>);

impl StreamOutcome {
    pub fn set(&self, status: StatusCode) {
        let _ = self.0.set(status);
    }

    pub fn get(&self) -> Option<StatusCode> {
        self.0.get().copied()
    }
}

/// Records a stream exactly once: when it ends, fails, or is dropped early
/// because the client went away. TTFT at its first chunk.
struct StreamMeter {
    reading: Reading,
    usage: Arc<crate::backend::UsageCell>,
    first: bool,
    /// The status to count: 200 once the stream ended, the error's status
    /// once it failed; 499 while neither happened.
    outcome: Option<StatusCode>,
    /// Set by a layer above that ended the stream.
    above: StreamOutcome,
}

impl Tap for StreamMeter {
    fn data(&mut self, chunk: Bytes, out: &mut Out) {
        if std::mem::take(&mut self.first) {
            self.reading.ttft();
        }
        out.push_back(chunk);
    }

    fn failed(&mut self, e: GatewayError, _: &mut Out) -> Option<GatewayError> {
        let (b, _) = self.reading.labels();
        self.reading
            .m
            .metrics
            .upstream_errors
            .with_label_values(&[b, "mid_stream"])
            .inc();
        self.outcome = Some(e.status());
        Some(e)
    }

    fn end(&mut self, _: &mut Out) {
        self.outcome = Some(StatusCode::OK);
    }
}

impl Drop for StreamMeter {
    fn drop(&mut self) {
        let status = self
            .outcome
            .or_else(|| self.above.get())
            .unwrap_or_else(|| {
                tracing::info!(route = %self.reading.route(), "client disconnected mid-stream");
                StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST)
            });
        // Usage so far (a stream that failed or was cut still used tokens).
        let usage = self.usage.get().unwrap_or_default();
        self.reading.record(Some(usage), status);
    }
}

/// The stream's chunks as they pass: TTFT at the first, the reading at the end.
fn metered(
    body: Body,
    reading: Reading,
    usage: Arc<crate::backend::UsageCell>,
    above: StreamOutcome,
) -> Body {
    tap(
        body,
        StreamMeter {
            reading,
            usage,
            first: true,
            outcome: None,
            above,
        },
    )
}
