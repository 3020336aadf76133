//! HTTP handlers. `chat_completions` walks the request path's stages in order.

use crate::api::openai::ParsedRequest;
use crate::api::ApiFormat;
use crate::backend::ReplyBody;
use crate::classifier::TriageResult;
use crate::error::GatewayError;
use crate::middleware::{dispatch, meter, parse, shadow, triage};
use crate::policy::{self, Requested, RouteDecision};
use crate::state::AppState;
use crate::translate::{to_anthropic, to_openai};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::Instant;

type AppRef = State<Arc<AppState>>;

/// Read the body up to the policy's limit.
pub async fn read_body(
    state: &AppState,
    req: Request,
) -> Result<(http::request::Parts, Bytes), GatewayError> {
    let limit = state.policy.server.max_body_bytes;
    let (parts, body) = req.into_parts();
    if let Some(len) = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if len > limit {
            return Err(GatewayError::PayloadTooLarge(limit));
        }
    }
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => Ok((parts, c.to_bytes())),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(GatewayError::PayloadTooLarge(limit))
        }
        Err(e) => Err(GatewayError::InvalidRequest {
            param: None,
            message: format!("could not read the request body: {e}"),
        }),
    }
}

fn count_error(state: &AppState, e: &GatewayError, route: &str) {
    state
        .metrics
        .requests
        .with_label_values(&[route, "none", "none", e.status().as_str()])
        .inc();
}

/// `POST /v1/chat/completions` (OpenAI format in and out).
pub async fn chat_completions(State(state): AppRef, req: Request) -> Response {
    entry(state, req, ApiFormat::OpenAi).await
}

/// `POST /v1/messages` (Anthropic format in and out). The request is
/// translated to the OpenAI shape and routed like any chat request; the
/// answer is translated back. `x-api-key` and `anthropic-version` are accepted.
pub async fn messages(State(state): AppRef, req: Request) -> Response {
    entry(state, req, ApiFormat::Anthropic).await
}

async fn entry(state: Arc<AppState>, req: Request, client: ApiFormat) -> Response {
    let started = Instant::now();
    match chat_inner(&state, req, started, client).await {
        Ok(r) => r,
        Err((e, route)) => {
            count_error(&state, &e, &route);
            e.render(client)
        }
    }
}

fn parse_for(
    client: ApiFormat,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Result<ParsedRequest, GatewayError> {
    match client {
        ApiFormat::OpenAi => parse::chat_request(body),
        ApiFormat::Anthropic => {
            let body = parse::json_object(body)?;
            let (raw, untranslatable) = to_openai::request(&body)?;
            let mut parsed = parse::chat_request_map(raw)?;
            parsed.native = Some(Arc::new(crate::api::AnthropicBody {
                body,
                untranslatable,
                beta: headers.get("anthropic-beta").cloned(),
            }));
            Ok(parsed)
        }
    }
}

async fn chat_inner(
    state: &Arc<AppState>,
    req: Request,
    started: Instant,
    client: ApiFormat,
) -> Result<Response, (GatewayError, String)> {
    let none = |e| (e, "none".to_string());
    parse::check_content_type(req.headers()).map_err(none)?;
    let (parts, body) = read_body(state, req).await.map_err(none)?;
    let parsed = parse_for(client, &parts.headers, &body).map_err(none)?;
    if state.policy.server.log_prompts {
        tracing::debug!(messages = ?parsed.messages, "prompt");
    }
    let (tri, decision) = plan(state, &parsed.messages, &parsed.model)
        .await
        .map_err(none)?;
    let route_label = decision.route.clone();
    let done = dispatch::run(state, &parsed, &decision)
        .await
        .map_err(|e| (e, route_label.clone()))?;
    let shadow_req = shadow::pick(state, &done.target.backend, &parsed);
    let routed = meter::Routed {
        route: route_label,
        target: done.target,
        triage: tri,
        started,
    };
    let mut resp = match done.reply.body {
        ReplyBody::Full { bytes, usage } => {
            let converted = convert_full(bytes.clone(), done.reply.format, client, &routed);
            let converted = converted.map_err(|e| (e, routed.route.clone()))?;
            let cost = meter::record(state, &routed, usage, 200);
            state
                .metrics
                .ttft
                .with_label_values(&[routed.target.backend.as_str()])
                .observe(started.elapsed().as_secs_f64());
            let overhead = meter::observe_overhead(state, &routed, done.reply.upstream_wait);
            if let Some(req) = shadow_req {
                shadow::spawn(state.clone(), req, shadow::completion_text(&bytes));
            }
            let mut r = Response::new(Body::from(converted));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            meter::headers(
                state,
                r.headers_mut(),
                &routed,
                Some(cost),
                overhead,
                &done.fallbacks,
            );
            r
        }
        ReplyBody::Stream { events, usage } => {
            let overhead = meter::observe_overhead(state, &routed, done.reply.upstream_wait);
            let mut h = http::HeaderMap::new();
            meter::headers(state, &mut h, &routed, None, overhead, &done.fallbacks);
            let events = match shadow_req {
                Some(req) => shadow::tee(state.clone(), req, events),
                None => events,
            };
            let events = match (done.reply.format, client) {
                (from, to) if from == to => events,
                (_, ApiFormat::Anthropic) => {
                    translate_events(events, to_anthropic::StreamTranslator::default())
                }
                (_, ApiFormat::OpenAi) => translate_events(
                    events,
                    to_openai::StreamTranslator::new(parsed.include_usage),
                ),
            };
            let body = meter::metered_stream(state.clone(), routed, events, usage);
            let mut r = Response::new(Body::from_stream(body));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            r.headers_mut().extend(h);
            r
        }
    };
    *resp.status_mut() = StatusCode::OK;
    Ok(resp)
}

/// A whole answer in the client's shape; an answer that cannot be read is
/// the upstream's failure (502), never an empty success.
fn convert_full(
    bytes: Bytes,
    from: ApiFormat,
    to: ApiFormat,
    routed: &meter::Routed,
) -> Result<Bytes, GatewayError> {
    if from == to {
        return Ok(bytes);
    }
    let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        GatewayError::UpstreamFailed(format!(
            "backend `{}` answered with invalid JSON: {e}",
            routed.target.backend
        ))
    })?;
    Ok(Bytes::from(match to {
        ApiFormat::Anthropic => to_anthropic::response(&v).to_string(),
        ApiFormat::OpenAi => to_openai::response(&v).0.to_string(),
    }))
}

/// One stream's events in the other API's shape.
fn translate_events(
    events: futures::stream::BoxStream<'static, Bytes>,
    mut t: impl crate::translate::StreamTranslate,
) -> futures::stream::BoxStream<'static, Bytes> {
    use futures::StreamExt;
    let s = async_stream::stream! {
        let mut events = events;
        while let Some(ev) = events.next().await {
            if let Some(data) = crate::backend::sse::event_data(&ev) {
                for b in t.push(&data) {
                    yield b;
                }
            }
        }
        for b in t.finish() {
            yield b;
        }
    };
    s.boxed()
}

/// Resolve the model, triage, decide: everything before dispatch. Explicit
/// models are routed by name, so their triage only labels the response and
/// takes the quick path.
async fn plan(
    state: &AppState,
    messages: &[crate::api::openai::ChatMessage],
    model: &str,
) -> Result<(TriageResult, RouteDecision), GatewayError> {
    let requested = state
        .index
        .resolve(model)
        .ok_or_else(|| GatewayError::ModelNotFound(model.to_string()))?;
    let quick = matches!(requested, Requested::Model(_));
    let tri = triage::run(state, messages, quick).await;
    let decision = policy::decide(
        &state.policy,
        requested,
        tri.score,
        tri.category,
        tri.local_success,
    );
    Ok((tri, decision))
}

/// The triage verdict and the route the policy would take — nothing is sent upstream.
pub async fn explain(
    state: &AppState,
    messages: &[crate::api::openai::ChatMessage],
    model: &str,
) -> Result<serde_json::Value, GatewayError> {
    let (tri, d) = plan(state, messages, model).await?;
    Ok(serde_json::json!({
        "score": tri.score,
        "category": tri.category,
        "local_success": tri.local_success,
        "route": d.route,
        "target": d.targets.first().map(|t| t.to_string()),
        "fallbacks": d.targets.iter().skip(1).map(|t| t.to_string()).collect::<Vec<_>>(),
        "triage": state.triage.name(),
    }))
}

/// `POST /v1/triage`: `{"prompt": "..."}` or `{"messages": [...]}`, optional `model` (default `auto`).
pub async fn triage_dry_run(State(state): AppRef, req: Request) -> Response {
    let run = async {
        parse::check_content_type(req.headers())?;
        let (_, body) = read_body(&state, req).await?;
        let mut obj = parse::json_object(&body)?;
        if let Some(p) = obj.remove("prompt") {
            let p = p
                .as_str()
                .ok_or_else(|| GatewayError::invalid("prompt", "`prompt` must be a string"))?
                .to_string();
            obj.insert(
                "messages".into(),
                serde_json::json!([{"role": "user", "content": p}]),
            );
        }
        obj.entry("model")
            .or_insert_with(|| serde_json::Value::String("auto".into()));
        let parsed = parse::chat_request(&serde_json::to_vec(&obj).unwrap_or_default())?;
        explain(&state, &parsed.messages, &parsed.model).await
    };
    match run.await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

pub async fn models(State(state): AppRef) -> Response {
    let mut data = Vec::new();
    for name in state.policy.routes.keys() {
        data.push(
            serde_json::json!({"id": name, "object": "model", "created": 0, "owned_by": "slmgate"}),
        );
    }
    for (b, cfg) in &state.policy.backends {
        for (m, mc) in cfg.models() {
            for id in std::iter::once(m).chain(mc.aliases.iter()) {
                data.push(
                    serde_json::json!({"id": id, "object": "model", "created": 0, "owned_by": b}),
                );
            }
        }
    }
    axum::Json(serde_json::json!({"object": "list", "data": data})).into_response()
}

pub async fn healthz() -> Response {
    axum::Json(serde_json::json!({"status": "ok"})).into_response()
}

pub async fn readyz(State(state): AppRef) -> Response {
    match state.ready() {
        Ok(()) => axum::Json(serde_json::json!({"status": "ready"})).into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"status": "not_ready", "reason": why})),
        )
            .into_response(),
    }
}

pub async fn metrics(State(state): AppRef) -> Response {
    let mut r = Response::new(Body::from(state.metrics.render()));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// Anthropic clients (by path or header) get errors in Anthropic's shape.
fn client_format(req: &Request) -> ApiFormat {
    if req.uri().path().starts_with("/v1/messages")
        || req.headers().contains_key("anthropic-version")
    {
        ApiFormat::Anthropic
    } else {
        ApiFormat::OpenAi
    }
}

pub async fn not_found(req: Request) -> Response {
    GatewayError::NotFound {
        method: req.method().to_string(),
        path: req.uri().path().chars().take(200).collect(),
    }
    .render(client_format(&req))
}

pub async fn method_not_allowed(req: Request) -> Response {
    GatewayError::MethodNotAllowed {
        method: req.method().to_string(),
        path: req.uri().path().chars().take(200).collect(),
    }
    .render(client_format(&req))
}
