//! Meter stage: tokens, cost, savings, latency, TTFT and the gateway's own
//! overhead, as metrics and `x-slmgate-*` response headers. Streams are
//! metered when they end — or when the client goes away mid-stream.

use crate::backend::UsageCell;
use crate::classifier::TriageResult;
use crate::policy::cost::{self, Usage};
use crate::policy::Target;
use crate::state::AppState;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue};
use rust_decimal::Decimal;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the meter needs to know about a routed request.
#[derive(Clone)]
pub struct Routed {
    pub route: String,
    pub target: Target,
    pub triage: TriageResult,
    pub started: Instant,
}

/// Record a finished request's tokens, cost, savings and counters; returns its cost.
pub fn record(state: &AppState, r: &Routed, usage: Usage, status: u16) -> Decimal {
    let m = &state.metrics;
    let (b, model) = (r.target.backend.as_str(), r.target.model.as_str());
    let price = state.model_config(&r.target);
    let cost = price.map(|p| cost::cost(p, usage)).unwrap_or_default();
    let saved = cost::savings(cost, state.reference.as_ref(), usage);
    m.tokens
        .with_label_values(&[b, model, "input"])
        .inc_by(usage.prompt_tokens);
    m.tokens
        .with_label_values(&[b, model, "output"])
        .inc_by(usage.completion_tokens);
    m.cost
        .with_label_values(&[b, model])
        .inc_by(cost::to_f64(cost));
    m.savings
        .with_label_values(&[b, model])
        .inc_by(cost::to_f64(saved));
    m.requests
        .with_label_values(&[r.route.as_str(), b, model, status.to_string().as_str()])
        .inc();
    m.duration
        .with_label_values(&[b])
        .observe(r.started.elapsed().as_secs_f64());
    cost
}

pub fn observe_overhead(state: &AppState, r: &Routed, upstream_wait: Duration) -> Duration {
    let overhead = r.started.elapsed().saturating_sub(upstream_wait);
    state.metrics.overhead.observe(overhead.as_secs_f64());
    overhead
}

fn put(h: &mut HeaderMap, name: &'static str, value: &str) {
    // Header values must be visible ASCII; replace anything else.
    let clean: String = value
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(1024)
        .collect();
    if let Ok(v) = HeaderValue::from_str(&clean) {
        h.insert(HeaderName::from_static(name), v);
    }
}

/// The `x-slmgate-*` headers of a routed response.
pub fn headers(
    state: &AppState,
    h: &mut HeaderMap,
    r: &Routed,
    cost: Option<Decimal>,
    overhead: Duration,
    fallbacks: &[String],
) {
    let backend = &r.target.backend;
    put(h, "x-slmgate-backend", backend);
    put(h, "x-slmgate-model", &r.target.model);
    if let Some(b) = state.backends.get(backend) {
        put(h, "x-slmgate-backend-kind", b.kind());
    }
    put(h, "x-slmgate-route", &r.route);
    put(
        h,
        "x-slmgate-triage-score",
        &format!("{:.4}", r.triage.score),
    );
    put(h, "x-slmgate-triage-category", r.triage.category);
    if let Some(c) = cost {
        put(h, "x-slmgate-cost-usd", &c.normalize().to_string());
    }
    put(
        h,
        "x-slmgate-overhead-ms",
        &format!("{:.3}", overhead.as_secs_f64() * 1000.0),
    );
    if !fallbacks.is_empty() {
        put(h, "x-slmgate-fallback", &fallbacks.join("; "));
    }
}

/// Records a stream's metrics exactly once: at its end, or when dropped
/// early because the client disconnected.
struct StreamGuard {
    state: Arc<AppState>,
    routed: Routed,
    usage: Arc<UsageCell>,
    completed: bool,
}

impl StreamGuard {
    fn complete(&mut self) {
        self.completed = true;
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let usage = self.usage.get().unwrap_or_default();
        if !self.completed {
            tracing::info!(route = %self.routed.route, target = %self.routed.target, "client disconnected mid-stream");
        }
        let status = if self.completed { 200 } else { 499 };
        record(&self.state, &self.routed, usage, status);
    }
}

/// Wrap client-ready SSE events: TTFT on the first event, metering at the end.
pub fn metered_stream(
    state: Arc<AppState>,
    routed: Routed,
    events: BoxStream<'static, Bytes>,
    usage: Arc<UsageCell>,
) -> BoxStream<'static, Result<Bytes, Infallible>> {
    let backend = routed.target.backend.clone();
    let mut guard = StreamGuard {
        state,
        routed,
        usage,
        completed: false,
    };
    let s = async_stream::stream! {
        let mut events = events;
        let mut first = true;
        while let Some(ev) = events.next().await {
            if first {
                first = false;
                let ttft = guard.routed.started.elapsed().as_secs_f64();
                guard.state.metrics.ttft.with_label_values(&[backend.as_str()]).observe(ttft);
            }
            yield Ok(ev);
        }
        guard.complete();
    };
    s.boxed()
}
