//! slmgate as a library. Build the gateway from a policy and use it as a
//! `tower::Service<http::Request<_>>`: serve it, nest it in your own axum
//! app next to your routes, or put a layer of your own into its chat path
//! (`with_layer`). The single stages are public too (`crate::middleware`):
//! `ParseLayer`, `TriageLayer` and `DecideLayer` in front of your own
//! handler give it the triage verdict and the policy's route as request
//! extensions. `examples/embed.rs` shows both.
//!
//! ```no_run
//! # async fn run() -> Result<(), String> {
//! use slmgate::{config::Policy, state::StateOptions, Gateway};
//! let policy = Policy::embedded_default()?;
//! let gateway = Gateway::from_policy(policy, StateOptions::from_process())?;
//! let app = axum::Router::new().nest_service("/llm", gateway);
//! # let _ = app; Ok(()) }
//! ```

use crate::api::ApiFormat;
use crate::config::Policy;
use crate::stack::{self, RouteService};
use crate::state::{AppState, StateOptions};
use axum::extract::Request;
use axum::response::Response;
use axum::Router;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// The gateway: its parts (`state`) and every route, as one service.
#[derive(Clone)]
pub struct Gateway {
    state: Arc<AppState>,
    router: Router,
}

impl Gateway {
    /// Build from a validated policy. Local models start loading in the
    /// background (`ready`/`wait_ready` say when); must run inside a tokio
    /// runtime.
    pub fn from_policy(policy: Policy, opts: StateOptions) -> Result<Gateway, String> {
        Ok(Self::from_state(AppState::new(policy, opts)?))
    }

    /// From already built parts.
    pub fn from_state(state: Arc<AppState>) -> Gateway {
        Gateway {
            router: crate::routes::router(state.clone(), tower::layer::util::Identity::new()),
            state,
        }
    }

    /// Put `layer` into the chat path (`/v1/chat/completions`, `/v1/messages`)
    /// where authentication and rate limits belong: after metering (its
    /// refusals are counted and answered in the client's format), before the
    /// body is read.
    pub fn with_layer<L>(self, layer: L) -> Gateway
    where
        L: Layer<RouteService> + Clone,
        L::Service: Service<Request, Response = Response, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        <L::Service as Service<Request>>::Future: Send + 'static,
    {
        Gateway {
            router: crate::routes::router(self.state.clone(), layer),
            state: self.state,
        }
    }

    /// Every route, as an axum `Router` to merge or nest into yours.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// The chat path alone, for clients that speak `client`.
    pub fn chat_service(&self, client: ApiFormat) -> RouteService {
        stack::chat(&self.state, client)
    }

    /// The parts the layers are built from (policy, triager, backends, metrics).
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Ok once every local model has loaded; otherwise what is still pending.
    pub fn ready(&self) -> Result<(), String> {
        self.state.ready()
    }

    /// Wait until local models are loaded (or one failed: then its error).
    pub async fn wait_ready(&self) -> Result<(), String> {
        self.state.wait_ready().await
    }
}

impl<B> Service<http::Request<B>> for Gateway
where
    B: axum::body::HttpBody<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = <Router as Service<http::Request<B>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        <Router as Service<http::Request<B>>>::poll_ready(&mut self.router, cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        self.router.call(req)
    }
}
