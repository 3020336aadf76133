//! slmgate: a cost-aware LLM/SLM routing gateway, built as a stack of tower
//! middleware (see `stack.rs` for the order and `middleware/` for each
//! stage). Embed it with [`Gateway`], or take single layers from
//! [`middleware`].

pub mod api;
pub mod backend;
pub mod cache;
pub mod calibrate;
pub mod classifier;
pub mod cli;
pub mod config;
pub mod dry_run;
pub mod error;
pub mod fetch;
pub mod gateway;
pub mod keys;
pub mod metrics;
pub mod middleware;
pub mod policy;
pub mod privacy;
pub mod reload;
pub mod requant;
pub mod routes;
pub mod server;
pub mod stack;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod translate;

pub use gateway::Gateway;

/// The whole service, testable without a socket.
pub fn app(state: std::sync::Arc<state::AppState>) -> axum::Router {
    routes::router(state, tower::layer::util::Identity::new())
}
