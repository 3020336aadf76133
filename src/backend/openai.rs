//! Any OpenAI-compatible chat-completions API over reqwest (rustls, pooled
//! connections). Retries connect errors, 429 and 5xx before the first byte
//! with jittered exponential backoff; streams are passed through event by
//! event with idle and total timeouts.

use super::sse::{self, EventSplitter, Filtered};
use super::{BackendReply, DispatchError, ReplyBody, UsageCell};
use crate::api::openai::ParsedRequest;
use crate::config::{OpenAiConfig, Retries, Timeouts};
use crate::error::GatewayError;
use crate::policy::cost::Usage;
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderValue, StatusCode};
use rand::Rng;
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

pub struct OpenAiBackend {
    name: String,
    key_env: String,
    /// `Authorization: Bearer <key>`, built once and marked sensitive (never
    /// printed); `Err` says why the backend is unavailable.
    auth: Result<HeaderValue, String>,
    url: String,
    timeouts: Timeouts,
    retries: Retries,
    client: reqwest::Client,
}

#[derive(Deserialize)]
struct UsageOnly {
    usage: Option<UsageJson>,
}
#[derive(Deserialize)]
struct UsageJson {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

impl OpenAiBackend {
    /// `env` looks up environment variables (injected so tests need not touch the process env).
    pub fn new(
        name: &str,
        cfg: &OpenAiConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let auth = match env(&cfg.api_key_env).filter(|k| !k.trim().is_empty()) {
            None => Err(format!(
                "backend `{name}` is unavailable: the environment variable {} is not set",
                cfg.api_key_env
            )),
            Some(k) => HeaderValue::from_str(&format!("Bearer {k}"))
                .map(|mut v| {
                    v.set_sensitive(true);
                    v
                })
                .map_err(|_| {
                    format!(
                        "backend `{name}` is unavailable: the value of {} is not a valid header value",
                        cfg.api_key_env
                    )
                }),
        };
        let base = cfg
            .base_url_env
            .as_deref()
            .and_then(env)
            .filter(|u| !u.trim().is_empty())
            .or_else(|| cfg.base_url.clone())
            .ok_or_else(|| format!("backend `{name}`: no base URL (set `base_url` or the env var in `base_url_env`)"))?;
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(cfg.timeouts.connect_ms))
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| format!("backend `{name}`: HTTP client: {e}"))?;
        Ok(Self {
            name: name.to_string(),
            key_env: cfg.api_key_env.clone(),
            auth,
            url: format!("{}/chat/completions", base.trim_end_matches('/')),
            timeouts: cfg.timeouts.clone(),
            retries: cfg.retries.clone(),
            client,
        })
    }

    fn auth(&self) -> Result<&HeaderValue, DispatchError> {
        self.auth.as_ref().map_err(|why| {
            DispatchError::retryable("unavailable", GatewayError::BackendUnavailable(why.clone()))
        })
    }

    pub fn availability(&self) -> Result<(), DispatchError> {
        self.auth().map(|_| ())
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

    fn body(&self, req: &ParsedRequest, model: &str) -> Result<Bytes, DispatchError> {
        let mut raw = req.raw.clone();
        raw.insert("model".into(), Value::String(model.to_string()));
        if req.stream {
            // Ask for the usage chunk so streams are metered; stripped again
            // for clients that did not ask for it.
            let opts = raw
                .entry("stream_options")
                .or_insert_with(|| Value::Object(Default::default()));
            if let Value::Object(o) = opts {
                o.insert("include_usage".into(), Value::Bool(true));
            }
        }
        serde_json::to_vec(&raw).map(Bytes::from).map_err(|e| {
            DispatchError::fatal(
                "internal",
                GatewayError::Internal(format!("encoding request: {e}")),
            )
        })
    }

    pub async fn chat(
        &self,
        req: &ParsedRequest,
        model: &str,
    ) -> Result<BackendReply, DispatchError> {
        let auth = self.auth()?;
        let body = self.body(req, model)?;
        let started = Instant::now();
        let deadline = started + Duration::from_millis(self.timeouts.total_ms);
        let mut attempt = 0;
        let resp = loop {
            let send = self
                .client
                .post(&self.url)
                .header(http::header::AUTHORIZATION, auth.clone())
                .header(http::header::CONTENT_TYPE, "application/json")
                .header(
                    http::header::ACCEPT,
                    if req.stream {
                        "text/event-stream"
                    } else {
                        "application/json"
                    },
                )
                .body(body.clone())
                .send();
            let first_byte = Duration::from_millis(self.timeouts.first_byte_ms);
            let outcome = tokio::time::timeout(first_byte, send).await;
            let retry_reason = match outcome {
                Err(_) => {
                    return Err(DispatchError::retryable(
                        "timeout",
                        GatewayError::UpstreamTimeout(format!(
                            "backend `{}` sent no response head within {} ms",
                            self.name, self.timeouts.first_byte_ms
                        )),
                    ))
                }
                Ok(Err(e)) if e.is_connect() => (
                    "connect",
                    format!("cannot connect to backend `{}`", self.name),
                ),
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
                Ok(Ok(r)) if r.status().is_success() => break r,
                Ok(Ok(r))
                    if r.status() == StatusCode::TOO_MANY_REQUESTS
                        || r.status().is_server_error() =>
                {
                    let s = r.status();
                    (
                        "upstream_status",
                        format!("backend `{}` answered {s}", self.name),
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
                    let body = r.bytes().await.unwrap_or_default();
                    return Err(DispatchError::fatal(
                        "client_error",
                        GatewayError::UpstreamClientError { status, body },
                    ));
                }
            };
            let pause = self.backoff(attempt);
            if attempt >= self.retries.max_retries || Instant::now() + pause >= deadline {
                let (reason, msg) = retry_reason;
                let msg = format!("{msg} (after {} attempt(s))", attempt + 1);
                return Err(DispatchError::retryable(
                    reason,
                    GatewayError::UpstreamFailed(msg),
                ));
            }
            tokio::time::sleep(pause).await;
            attempt += 1;
        };
        if req.stream {
            let usage = Arc::new(UsageCell::default());
            let events = stream_events(
                resp,
                req.include_usage,
                usage.clone(),
                Duration::from_millis(self.timeouts.idle_ms),
                deadline,
                self.name.clone(),
            );
            return Ok(BackendReply {
                body: ReplyBody::Stream { events, usage },
                upstream_wait: started.elapsed(),
            });
        }
        let bytes = match tokio::time::timeout_at(deadline, resp.bytes()).await {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                return Err(DispatchError::retryable(
                    "transport",
                    GatewayError::UpstreamFailed(format!(
                        "backend `{}` broke off its response: {}",
                        self.name,
                        without_url(&e)
                    )),
                ))
            }
            Err(_) => {
                return Err(DispatchError::retryable(
                    "timeout",
                    GatewayError::UpstreamTimeout(format!(
                        "backend `{}` did not finish within {} ms",
                        self.name, self.timeouts.total_ms
                    )),
                ))
            }
        };
        let usage = serde_json::from_slice::<UsageOnly>(&bytes)
            .ok()
            .and_then(|u| u.usage)
            .map(|u| Usage {
                prompt_tokens: u.prompt_tokens,
                completion_tokens: u.completion_tokens,
            })
            .unwrap_or_default();
        Ok(BackendReply {
            body: ReplyBody::Full { bytes, usage },
            upstream_wait: started.elapsed(),
        })
    }
}

/// reqwest errors can carry the URL; keep messages free of it.
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(u.as_str(), "<upstream>");
    }
    s
}

/// An SSE error event in OpenAI's shape, for failures after the head was sent.
pub fn error_event(message: &str, code: &str) -> Bytes {
    let v =
        serde_json::json!({"error": {"message": message, "type": "upstream_error", "code": code}});
    sse::data_event(&v.to_string())
}

fn stream_events(
    resp: reqwest::Response,
    wants_usage: bool,
    cell: Arc<UsageCell>,
    idle: Duration,
    deadline: Instant,
    name: String,
) -> futures::stream::BoxStream<'static, Bytes> {
    let s = async_stream::stream! {
        let mut body = resp.bytes_stream();
        let mut splitter = EventSplitter::default();
        let mut usage: Option<Usage> = None;
        loop {
            let wait_until = (Instant::now() + idle).min(deadline);
            match tokio::time::timeout_at(wait_until, body.next()).await {
                Err(_) => {
                    tracing::warn!(backend = %name, "upstream stream timed out");
                    yield error_event(&format!("backend `{name}` stream timed out"), "upstream_timeout");
                    break;
                }
                Ok(None) => {
                    if let Some(rest) = splitter.finish() {
                        let mut ev = rest.to_vec();
                        ev.extend_from_slice(b"\n\n");
                        if let Filtered::Forward(b) = sse::filter_openai_event(Bytes::from(ev), wants_usage, &mut usage) {
                            yield b;
                        }
                    }
                    break;
                }
                Ok(Some(Err(e))) => {
                    tracing::warn!(backend = %name, error = %without_url(&e), "upstream stream broke off");
                    yield error_event(&format!("backend `{name}` stream broke off"), "upstream_failed");
                    break;
                }
                Ok(Some(Ok(chunk))) => {
                    for ev in splitter.push(&chunk) {
                        if let Filtered::Forward(b) = sse::filter_openai_event(ev, wants_usage, &mut usage) {
                            yield b;
                        }
                    }
                    if let Some(u) = usage.take() {
                        cell.set(u);
                    }
                }
            }
        }
        if let Some(u) = usage {
            cell.set(u);
        }
    };
    s.boxed()
}
