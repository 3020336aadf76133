//! slmgate: a cost-aware LLM/SLM routing gateway.

pub mod api;
pub mod backend;
pub mod calibrate;
pub mod classifier;
pub mod cli;
pub mod cli_triage;
pub mod config;
pub mod error;
pub mod fetch;
pub mod handlers;
pub mod metrics;
pub mod middleware;
pub mod policy;
pub mod requant;
pub mod server;
pub mod stack;
pub mod state;
pub mod telemetry;
pub mod translate;

use axum::routing::{get, post};
use axum::Router;
use state::AppState;
use std::sync::Arc;

/// The whole service, testable without a socket.
pub fn app(state: Arc<AppState>) -> Router {
    let router = Router::new()
        .route("/v1/chat/completions", post(handlers::chat_completions))
        .route("/v1/messages", post(handlers::messages))
        .route("/v1/models", get(handlers::models))
        .route("/v1/triage", post(handlers::triage_dry_run))
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .route("/metrics", get(handlers::metrics))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .with_state(state);
    stack::wrap(router)
}
