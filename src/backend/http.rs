//! The HTTP side every cloud backend shares: one pooled reqwest (rustls)
//! client per backend, auth headers built once (marked sensitive, never
//! printed), retries of connect errors, 429 and 5xx before the first byte
//! with jittered exponential backoff, first-byte / idle / total timeouts, and
//! a stream pump that maps upstream SSE events to client-ready OpenAI events
//! (a failure after the head ends the stream with the error itself).

use super::replicas::{Lease, Replicas};
use super::{DispatchError, EventStream, UsageCell};
use crate::api::sse::EventSplitter;
use crate::api::ApiFormat;
use crate::config::{Cloud, Retries, Timeouts};
use crate::error::GatewayError;
use crate::policy::cost::Usage;
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

pub struct Upstream {
    pub name: String,
    key_env: String,
    /// Auth plus fixed headers; `Err` says why the backend is unavailable.
    headers: Result<HeaderMap, String>,
    /// Where requests go: one base URL, or a self-hosted server's replicas.
    replicas: Arc<Replicas>,
    timeouts: Timeouts,
    retries: Retries,
    client: reqwest::Client,
    /// The API the upstream speaks (its 4xx bodies are in this shape).
    format: ApiFormat,
}

/// How the key is sent: header name and value prefix (`Bearer `, or none).
pub struct Auth {
    pub header: HeaderName,
    pub prefix: &'static str,
}

/// A sent request that answered 2xx.
pub struct Sent {
    pub resp: reqwest::Response,
    pub started: Instant,
    pub deadline: Instant,
    /// The replica answering, counted busy until the answer is read.
    lease: Lease,
}

/// Maps one upstream SSE event to client-ready events; an error is the
/// upstream's failure (an error event, a broken stream) and ends the stream.
pub trait EventMapper: Send + 'static {
    fn event(&mut self, event: Bytes) -> Result<Vec<Bytes>, GatewayError>;
    /// Usage to store, once known (storing the same usage again is harmless).
    fn take_usage(&mut self) -> Option<Usage>;
    /// The client's answer is complete: stop reading the upstream.
    fn is_done(&self) -> bool {
        false
    }
    /// Called when the upstream closed the stream: what to send after the
    /// last event (an error when the stream ended before its final event).
    fn end(&mut self) -> Result<Vec<Bytes>, GatewayError> {
        Ok(vec![])
    }
    /// What the answer has used so far, before the upstream says (for a
    /// stream the client abandons).
    fn estimate(&self) -> Option<Usage> {
        None
    }
}

impl Upstream {
    /// `path` is appended to the base URL; `env` looks up environment
    /// variables (injected so tests need not touch the process env).
    pub fn new(
        name: &str,
        cfg: &Cloud<'_>,
        path: &str,
        auth: Auth,
        fixed: &[(HeaderName, &str)],
        format: ApiFormat,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let fixed_only = || {
            let mut h = HeaderMap::new();
            for (n, v) in fixed {
                if let Ok(v) = HeaderValue::from_str(v) {
                    h.insert(n.clone(), v);
                }
            }
            h
        };
        let key = match cfg.api_key_env {
            // A self-hosted server without auth (validated).
            "" => Some(None),
            var => env(var).filter(|k| !k.trim().is_empty()).map(Some),
        };
        let headers = match key {
            Some(None) => Ok(fixed_only()),
            None => Err(format!(
                "backend `{name}` is unavailable: the environment variable {} is not set",
                cfg.api_key_env
            )),
            Some(Some(k)) => HeaderValue::from_str(&format!("{}{k}", auth.prefix))
                .map(|mut v| {
                    v.set_sensitive(true);
                    let mut h = fixed_only();
                    h.insert(auth.header, v);
                    h
                })
                .map_err(|_| {
                    format!(
                        "backend `{name}` is unavailable: the value of {} is not a valid header value",
                        cfg.api_key_env
                    )
                }),
        };
        let bases = if cfg.base_urls.is_empty() {
            let base = cfg
                .base_url_env
                .and_then(env)
                .filter(|u| !u.trim().is_empty())
                .or_else(|| cfg.base_url.map(str::to_string))
                .ok_or_else(|| format!("backend `{name}`: no base URL (set `base_url` or the env var in `base_url_env`)"))?;
            vec![base]
        } else {
            cfg.base_urls.to_vec()
        };
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(cfg.timeouts.connect_ms))
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| format!("backend `{name}`: HTTP client: {e}"))?;
        let replicas = Replicas::new(&bases, path, cfg.eject.clone());
        replicas.start_probes(client.clone());
        Ok(Self {
            name: name.to_string(),
            key_env: cfg.api_key_env.to_string(),
            headers,
            replicas,
            timeouts: cfg.timeouts.clone(),
            retries: cfg.retries.clone(),
            client,
            format,
        })
    }

    fn headers(&self) -> Result<&HeaderMap, DispatchError> {
        self.headers.as_ref().map_err(|why| {
            DispatchError::retryable("unavailable", GatewayError::BackendUnavailable(why.clone()))
        })
    }

    pub fn availability(&self) -> Result<(), DispatchError> {
        self.headers().map(|_| ())
    }

    pub fn replicas(&self) -> &Arc<Replicas> {
        &self.replicas
    }

    /// After a failed attempt on replica `index`: whether another replica,
    /// not tried yet for this request, can be tried at once.
    fn failover(&self, tried: &mut Vec<usize>, index: usize, deadline: Instant) -> bool {
        if !tried.contains(&index) {
            tried.push(index);
        }
        let more = tried.len() < self.replicas.len() && Instant::now() < deadline;
        if more {
            tracing::debug!(backend = %self.name, replica = index, "trying another replica");
        }
        more
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let base = self
            .retries
            .initial_backoff_ms
            .saturating_mul(1u64 << attempt.min(16));
        let capped = base.min(self.retries.max_backoff_ms);
        let jitter = rand::rng().random_range(0.5..=1.0);
        Duration::from_millis((capped as f64 * jitter) as u64)
    }

    /// POST `body`, retrying what may succeed on a second try; `Ok` once a
    /// 2xx head arrived.
    pub async fn send(&self, body: Bytes, stream: bool) -> Result<Sent, DispatchError> {
        self.send_with(body, stream, &HeaderMap::new()).await
    }

    /// `send` with extra headers for this request only.
    pub async fn send_with(
        &self,
        body: Bytes,
        stream: bool,
        extra: &HeaderMap,
    ) -> Result<Sent, DispatchError> {
        let mut headers = self.headers()?.clone();
        headers.extend(extra.clone());
        let started = Instant::now();
        let deadline = started + Duration::from_millis(self.timeouts.total_ms);
        let mut attempt = 0;
        let mut tried = Vec::new();
        loop {
            let lease = self.replicas.pick(&tried);
            let index = lease.index;
            let send = self
                .client
                .post(lease.url())
                .headers(headers.clone())
                .header(http::header::CONTENT_TYPE, "application/json")
                .header(
                    http::header::ACCEPT,
                    if stream {
                        "text/event-stream"
                    } else {
                        "application/json"
                    },
                )
                .body(body.clone())
                .send();
            let first_byte = Duration::from_millis(self.timeouts.first_byte_ms);
            let head_by = (Instant::now() + first_byte).min(deadline);
            let outcome = tokio::time::timeout_at(head_by, send).await;
            // Passive health: a replica is down when it cannot be reached,
            // resets, answers 500/502, or leaves a stream's head waiting. An
            // overloaded one (503, 429) is up; so is one slow to finish a
            // whole answer (its head comes after the generation).
            let health = match &outcome {
                Ok(Ok(r)) => Some(!matches!(r.status().as_u16(), 500 | 502)),
                Ok(Err(_)) => Some(false),
                Err(_) => stream.then_some(false),
            };
            if let Some(ok) = health {
                self.replicas.record(index, ok);
            }
            let (reason, msg, status, retry_after) = match outcome {
                // A whole answer that is slow is not re-run elsewhere.
                Err(_) if stream && self.failover(&mut tried, index, deadline) => continue,
                Err(_) => {
                    return Err(DispatchError::retryable(
                        "timeout",
                        GatewayError::UpstreamTimeout(format!(
                            "backend `{}` sent no response head within {} ms",
                            self.name, self.timeouts.first_byte_ms
                        )),
                    ))
                }
                Ok(Err(e)) if e.is_connect() && self.failover(&mut tried, index, deadline) => {
                    continue
                }
                Ok(Err(e)) if e.is_connect() => (
                    "connect",
                    format!("cannot connect to backend `{}`", self.name),
                    None,
                    None,
                ),
                // Reset before the head: another replica may answer.
                Ok(Err(_)) if self.failover(&mut tried, index, deadline) => continue,
                Ok(Err(e)) => {
                    return Err(DispatchError::retryable(
                        "transport",
                        GatewayError::UpstreamFailed(format!(
                            "backend `{}` request failed: {}",
                            self.name,
                            without_url(&e)
                        )),
                    ))
                }
                Ok(Ok(r)) if r.status().is_success() => {
                    return Ok(Sent {
                        resp: r,
                        started,
                        deadline,
                        lease,
                    })
                }
                Ok(Ok(r))
                    if r.status() == StatusCode::TOO_MANY_REQUESTS
                        || r.status().is_server_error() =>
                {
                    let s = r.status();
                    // The retry prefers another replica.
                    tried.push(index);
                    (
                        if s == StatusCode::TOO_MANY_REQUESTS {
                            "rate_limited"
                        } else {
                            "upstream_status"
                        },
                        format!("backend `{}` answered {s}", self.name),
                        Some(s),
                        retry_after_header(r.headers()),
                    )
                }
                Ok(Ok(r))
                    if r.status() == StatusCode::UNAUTHORIZED
                        || r.status() == StatusCode::FORBIDDEN =>
                {
                    return Err(DispatchError::retryable(
                        "auth",
                        GatewayError::UpstreamFailed(format!(
                            "backend `{}` rejected the gateway's credentials ({}); check {}",
                            self.name,
                            r.status(),
                            self.key_env
                        )),
                    ))
                }
                Ok(Ok(r)) => {
                    // The upstream's own words about the client's request.
                    let status = r.status();
                    let body = tokio::time::timeout_at(deadline, r.bytes())
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .unwrap_or_default();
                    return Err(DispatchError::fatal(
                        "client_error",
                        GatewayError::UpstreamClientError {
                            status,
                            body,
                            format: self.format,
                        },
                    ));
                }
            };
            // The upstream's `Retry-After`, when it gave one, is the
            // shortest wait; one longer than `max_backoff_ms` is not waited
            // for here (the fallback, or the client, takes it from there).
            // With a replica not tried yet, the retry goes there at once.
            let other_replica = tried.len() < self.replicas.len();
            let backoff = self.backoff(attempt);
            let pause = match retry_after {
                _ if other_replica => Duration::ZERO,
                Some(r) => r.max(backoff),
                None => backoff,
            };
            let too_long = !other_replica
                && retry_after
                    .is_some_and(|r| r > Duration::from_millis(self.retries.max_backoff_ms));
            if attempt >= self.retries.max_retries || too_long || Instant::now() + pause >= deadline
            {
                let message = format!("{msg} (after {} attempt(s))", attempt + 1);
                let error = match status.map(|s| s.as_u16()) {
                    // Told to slow down: the client hears the same, with the wait.
                    Some(429) => GatewayError::RateLimited {
                        message,
                        retry_after: retry_after.unwrap_or(Duration::from_secs(1)),
                    },
                    // 503 and Anthropic's 529 mean "overloaded, come back later".
                    Some(503 | 529) => GatewayError::Overloaded {
                        message,
                        retry_after,
                    },
                    _ => GatewayError::UpstreamFailed(message),
                };
                return Err(DispatchError::retryable(reason, error));
            }
            drop(lease); // not busy while waiting
            tokio::time::sleep(pause).await;
            attempt += 1;
        }
    }

    /// The whole body of a non-streamed answer, within the total deadline.
    pub async fn read_full(&self, sent: Sent) -> Result<Bytes, DispatchError> {
        match tokio::time::timeout_at(sent.deadline, sent.resp.bytes()).await {
            Ok(Ok(b)) => Ok(b),
            Ok(Err(e)) => Err(DispatchError::retryable(
                "transport",
                GatewayError::UpstreamFailed(format!(
                    "backend `{}` broke off its response: {}",
                    self.name,
                    without_url(&e)
                )),
            )),
            Err(_) => Err(DispatchError::retryable(
                "timeout",
                GatewayError::UpstreamTimeout(format!(
                    "backend `{}` did not finish within {} ms",
                    self.name, self.timeouts.total_ms
                )),
            )),
        }
    }

    /// A streamed answer as the reply: events through `mapper`, usage
    /// recorded as it is learned.
    pub fn stream_reply<M: EventMapper>(
        &self,
        sent: Sent,
        mapper: M,
        format: ApiFormat,
    ) -> super::BackendReply {
        let started = sent.started;
        let usage = Arc::new(UsageCell::default());
        // The prompt counts from the start: a stream abandoned before its
        // first chunk has still cost it.
        if let Some(u) = mapper.estimate() {
            usage.estimate(u);
        }
        let events = self.stream(sent, mapper, usage.clone());
        super::BackendReply {
            format,
            body: super::ReplyBody::Stream { events, usage },
            upstream_wait: started.elapsed(),
        }
    }

    /// Pump a streamed answer through `mapper`, with the idle and total
    /// timeouts; a failure after the head is the stream's last item.
    pub fn stream<M: EventMapper>(
        &self,
        sent: Sent,
        mut mapper: M,
        cell: Arc<UsageCell>,
    ) -> EventStream {
        let idle = Duration::from_millis(self.timeouts.idle_ms);
        let name = self.name.clone();
        let Sent {
            resp,
            deadline,
            lease,
            ..
        } = sent;
        let s = async_stream::stream! {
            // The replica stays counted busy while its stream runs.
            let _lease = lease;
            let mut body = resp.bytes_stream();
            let mut splitter = EventSplitter::default();
            let mut failure = None;
            'pump: loop {
                let wait_until = (Instant::now() + idle).min(deadline);
                match tokio::time::timeout_at(wait_until, body.next()).await {
                    Err(_) => {
                        tracing::warn!(backend = %name, "upstream stream timed out");
                        failure = Some(GatewayError::UpstreamTimeout(format!("backend `{name}` stream timed out")));
                        break;
                    }
                    Ok(None) => {
                        let rest = splitter.finish().map(|rest| {
                            let mut ev = rest.to_vec();
                            ev.extend_from_slice(b"\n\n");
                            Bytes::from(ev)
                        });
                        let last = match rest.map(|ev| mapper.event(ev)).unwrap_or(Ok(vec![])) {
                            Ok(mut out) => mapper.end().map(|end| { out.extend(end); out }),
                            Err(e) => Err(e),
                        };
                        match last {
                            Ok(out) => for b in out { yield Ok(b); },
                            Err(e) => failure = Some(e),
                        }
                        break;
                    }
                    Ok(Some(Err(e))) => {
                        tracing::warn!(backend = %name, error = %without_url(&e), "upstream stream broke off");
                        failure = Some(GatewayError::UpstreamFailed(format!("backend `{name}` stream broke off")));
                        break;
                    }
                    Ok(Some(Ok(chunk))) => {
                        for ev in splitter.push(&chunk) {
                            match mapper.event(ev) {
                                Ok(out) => for b in out { yield Ok(b); },
                                Err(e) => {
                                    failure = Some(e);
                                    break 'pump;
                                }
                            }
                        }
                        if let Some(u) = mapper.take_usage() {
                            cell.set(u);
                        } else if let Some(u) = mapper.estimate() {
                            cell.estimate(u);
                        }
                        if mapper.is_done() {
                            break; // dropping the body closes the upstream request
                        }
                    }
                }
            }
            // Usage first: the failure may be the last thing read from this stream.
            if let Some(u) = mapper.take_usage() {
                cell.set(u);
            }
            if let Some(e) = failure {
                yield Err(e);
            }
        };
        s.boxed()
    }
}

/// `Retry-After` in seconds (an HTTP date, or anything else, is ignored),
/// capped at an hour.
fn retry_after_header(h: &HeaderMap) -> Option<Duration> {
    let secs: u64 = h
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs.min(3600)))
}

/// reqwest errors can carry the URL; keep messages free of it.
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(u.as_str(), "<upstream>");
    }
    s
}
