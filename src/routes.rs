//! The routes beside the chat path: the model list, health and readiness
//! probes, Prometheus metrics, and JSON 404/405 answers in the client's
//! format.

use crate::api::ApiFormat;
use crate::error::GatewayError;
use crate::middleware::access_log::AccessLogLayer;
use crate::middleware::catch_panic::{client_format, CatchPanicLayer};
use crate::stack::{self, RouteService};
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post_service, MethodRouter};
use axum::Router;
use http::{header, HeaderValue, StatusCode};
use std::convert::Infallible;
use std::sync::Arc;
use tower::{Layer, Service, ServiceBuilder};

/// Every route: the chat paths (with `extra`, the embedder's layer, in
/// them), the dry run, and the small routes.
pub fn router<L>(state: Arc<AppState>, extra: L) -> Router
where
    L: Layer<RouteService> + Clone,
    L::Service:
        Service<Request, Response = Response, Error = Infallible> + Clone + Send + Sync + 'static,
    <L::Service as Service<Request>>::Future: Send + 'static,
{
    let post_only = |svc: RouteService| -> MethodRouter {
        post_service(svc).fallback_service(stack::around(tower::service_fn(|req| async {
            Ok::<_, Infallible>(method_not_allowed(req).await)
        })))
    };
    let small = Router::new()
        .route("/v1/models", get(models))
        .route("/v1/keys", get(keys))
        .route("/v1/policy", get(policy))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state.clone())
        .layer(
            ServiceBuilder::new()
                .layer(AccessLogLayer)
                .layer(CatchPanicLayer::new(None)),
        );
    Router::new()
        .route(
            "/v1/chat/completions",
            post_only(stack::chat_with(&state, ApiFormat::OpenAi, extra.clone())),
        )
        .route(
            "/v1/messages",
            post_only(stack::chat_with(&state, ApiFormat::Anthropic, extra)),
        )
        .route("/v1/triage", post_only(stack::dry_run(&state)))
        .merge(small)
}

type AppRef = State<Arc<AppState>>;

/// `GET /v1/models`: routes (`auto`, ...) and every configured model id and alias.
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

/// `GET /v1/keys` (an admin key only): every key's name, limits and usage
/// now. Never a key or its hash.
pub async fn keys(State(state): AppRef, req: Request) -> Response {
    let client = client_format(&req);
    if let Err(refused) = admin_only(&state, &req) {
        return refused.render(client);
    }
    let mut data = Vec::new();
    let mut callers: Vec<_> = state.keys.callers().collect();
    callers.sort_by(|a, b| a.name.cmp(&b.name));
    for c in callers {
        let usage = state.shared.store.usage(&c.name).await;
        let usage = match state.shared.judge("usage", usage) {
            Ok(Some(u)) => {
                let usd = |m: i64| m as f64 / 1e6;
                serde_json::json!({
                    "requests_last_minute": u.requests_last_minute,
                    "tokens_last_minute": u.tokens_last_minute,
                    "day": {"spent_usd": usd(u.day.spent), "reserved_usd": usd(u.day.reserved)},
                    "month": {"spent_usd": usd(u.month.spent), "reserved_usd": usd(u.month.reserved)},
                })
            }
            Ok(None) => serde_json::Value::Null,
            Err(e) => return e.render(client),
        };
        let k = &c.key;
        data.push(serde_json::json!({
            "name": &*c.name, "id": k.id, "admin": k.admin, "models": k.models,
            "rpm": k.rpm, "tpm": k.tpm,
            "budget_usd_day": k.budget_usd_day, "budget_usd_month": k.budget_usd_month,
            "usage": usage,
        }));
    }
    axum::Json(serde_json::json!({"object": "list", "shared": state.shared.store.is_shared(), "data": data}))
        .into_response()
}

/// Admin endpoints: open while the policy has no keys; otherwise an admin
/// key (401 without a valid key, 403 with a non-admin one).
fn admin_only(state: &AppState, req: &Request) -> Result<(), GatewayError> {
    if state.keys.is_empty() {
        return Ok(());
    }
    match crate::keys::presented(req.headers()).and_then(|k| state.keys.verify(k)) {
        None => Err(GatewayError::Unauthorized(
            "an admin key is required".into(),
        )),
        Some(c) if !c.key.admin => Err(GatewayError::Forbidden(format!(
            "key `{}` is not an admin key",
            c.name
        ))),
        Some(_) => Ok(()),
    }
}

/// `GET /v1/policy` (an admin key when keys are configured): which policy
/// is serving — the sha256 of its YAML text and when it was loaded — so an
/// operator sees a reload take effect.
pub async fn policy(State(state): AppRef, req: Request) -> Response {
    if let Err(refused) = admin_only(&state, &req) {
        return refused.render(client_format(&req));
    }
    let loaded = state
        .loaded_at
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    axum::Json(serde_json::json!({
        "sha256": state.policy.source_hash,
        "loaded_at": loaded,
        "backends": state.policy.backends.keys().collect::<Vec<_>>(),
        "routes": state.policy.routes.keys().collect::<Vec<_>>(),
        "keys": state.keys.len(),
        "shared_state": state.shared.store.is_shared(),
    }))
    .into_response()
}

pub async fn healthz() -> Response {
    axum::Json(serde_json::json!({"status": "ok"})).into_response()
}

pub async fn readyz(State(state): AppRef) -> Response {
    // Open circuits are detail, not unreadiness: fallbacks still answer.
    let circuits: serde_json::Map<String, serde_json::Value> = state
        .backends
        .circuits()
        .into_iter()
        .map(|(n, s)| (n.to_string(), s.as_str().into()))
        .collect();
    // Ejected replicas are detail too, while one is left.
    let replicas: serde_json::Map<String, serde_json::Value> = state
        .backends
        .replicas()
        .into_iter()
        .map(|(n, (healthy, total))| {
            (
                n.to_string(),
                serde_json::json!({"healthy": healthy, "total": total}),
            )
        })
        .collect();
    match state.ready() {
        Ok(()) => axum::Json(
            serde_json::json!({"status": "ready", "circuits": circuits, "replicas": replicas}),
        )
        .into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(
                serde_json::json!({"status": "not_ready", "reason": why, "circuits": circuits}),
            ),
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
