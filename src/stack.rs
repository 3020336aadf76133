//! The middleware stacks, each built in one function, outermost first, each
//! layer with why it sits where it does. `chat_with` is the request path;
//! the dry run and the small routes reuse its outer layers.

use crate::api::ApiFormat;
use crate::dry_run::{Explain, PromptLayer};
use crate::middleware::access_log::AccessLogLayer;
use crate::middleware::auth::AuthLayer;
use crate::middleware::budget::BudgetLayer;
use crate::middleware::cache::CacheLayer;
use crate::middleware::catch_panic::CatchPanicLayer;
use crate::middleware::decide::DecideLayer;
use crate::middleware::dispatch::Dispatch;
use crate::middleware::edge::EdgeLayer;
use crate::middleware::limits::LimitsLayer;
use crate::middleware::meter::MeterLayer;
use crate::middleware::parse::ParseLayer;
use crate::middleware::privacy::PrivacyLayer;
use crate::middleware::read_body::ReadBodyLayer;
use crate::middleware::semantic::SemanticLayer;
use crate::middleware::shadow::ShadowLayer;
use crate::middleware::triage::TriageLayer;
use crate::state::AppState;
use axum::extract::Request;
use axum::response::Response;
use std::convert::Infallible;
use tower::layer::util::Identity;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceBuilder};

/// A whole stack, as a route's service.
pub type RouteService = BoxCloneSyncService<Request, Response, Infallible>;

/// The chat path with nothing of the embedder's in it.
pub fn chat(state: &AppState, client: ApiFormat) -> RouteService {
    chat_with(state, client, Identity::new())
}

/// The chat path for clients that speak `client`, with `extra` (an
/// embedder's own layer: a header check, authentication, ...) where
/// authentication and rate limits belong: metered and answered in the
/// client's format, before any work is done on the body.
pub fn chat_with<L>(state: &AppState, client: ApiFormat, extra: L) -> RouteService
where
    L: Layer<RouteService>,
    L::Service:
        Service<Request, Response = Response, Error = Infallible> + Clone + Send + Sync + 'static,
    <L::Service as Service<Request>>::Future: Send + 'static,
{
    let keyed = !state.keys.is_empty();
    let chain = ServiceBuilder::new()
        // Outermost: every request gets its id and tracing span first, and
        // is logged once with what the layers below left in the response.
        .layer(AccessLogLayer)
        // A panic anywhere below becomes a 500 in the client's format, which
        // the access log still sees.
        .layer(CatchPanicLayer::new(Some(client)))
        // The client's format, decided once: below it everything speaks the
        // OpenAI pivot; on the way out answers (whole and streamed) and
        // errors are put back into the client's shape.
        .layer(EdgeLayer::new(client))
        // Metering sees every answer, errors included, in the pivot shape:
        // requests are counted here exactly once, streams when they end.
        .layer(MeterLayer::new(state.metrics.clone(), state.prices.clone()))
        // With keys: who is calling, before any work is done on the body;
        // its 401 is metered and answered in the client's format.
        .option_layer(keyed.then(|| AuthLayer::new(state.keys.clone())))
        // The embedder's layer: after the meter so its refusals are counted,
        // before the body is read.
        .layer(extra)
        // Keeps the type above nameable for `extra`.
        .layer(BoxCloneSyncService::layer())
        // The body, bounded, before anything parses it.
        .layer(
            ReadBodyLayer::new(state.policy.server.max_body_bytes).with_timeout(
                std::time::Duration::from_secs(state.policy.server.client_timeout_secs),
            ),
        )
        // Client JSON -> OpenAI pivot (Anthropic translated here), model resolved.
        .layer(ParseLayer::new(
            state.routing.clone(),
            state.policy.server.log_prompts,
        ))
        // With keys: the model the key may name (403) and its request and
        // token rates (429), before any triage work is spent on it.
        .option_layer(keyed.then(|| {
            LimitsLayer::new(
                state.routing.clone(),
                state.shared.clone(),
                state.metrics.clone(),
            )
        }))
        // With a cache: an answer already given to this very request (same
        // key, when keys are on) is sent again, skipping triage, policy,
        // budget and dispatch; a miss is stored when its answer completes.
        .option_layer(state.cache.clone().map(|c| {
            CacheLayer::new(
                c,
                state.policy.clone(),
                state.prices.clone(),
                state.metrics.clone(),
            )
        }))
        // Needs the parsed messages; decide needs its verdict.
        .layer(TriageLayer::new(state.triage.clone()))
        // With a semantic cache, on the routes that ask for it: an answer to
        // a request that differed only in a last user message of the same
        // meaning (embedded with the triage's encoder, so after triage).
        .option_layer(state.semantic.clone().map(|c| {
            SemanticLayer::new(
                c,
                state.triage.clone(),
                state.policy.clone(),
                state.prices.clone(),
                state.metrics.clone(),
            )
        }))
        // The policy's target and fallbacks from what was asked and the verdict.
        .layer(DecideLayer)
        // With a `pii` rule: personal or secret data is kept local, redacted
        // or refused, after decide (it may change the decision) and before
        // anything is reserved or sent.
        .option_layer(privacy(state))
        // With keys: reserve the dearest target's cost against the key's
        // budgets, just before anything is spent (settled by the meter); a
        // spent budget sends the request to the local model.
        .option_layer(keyed.then(|| {
            BudgetLayer::new(
                state.shared.clone(),
                state.prices.clone(),
                state.policy.clone(),
                state.metrics.clone(),
            )
        }))
        // Only when the policy configures it: tees local answers on their
        // way out, after dispatch has said which backend answered.
        .option_layer(state.shadow.clone().map(ShadowLayer::new))
        // The leaf: backends with fallbacks.
        .service(Dispatch::new(state.backends.clone(), state.metrics.clone()));
    BoxCloneSyncService::new(chain)
}

/// `POST /v1/triage`: the chat path's parse, triage and decide, with nothing
/// sent upstream.
pub fn dry_run(state: &AppState) -> RouteService {
    let chain = ServiceBuilder::new()
        .layer(AccessLogLayer)
        .layer(CatchPanicLayer::new(Some(ApiFormat::OpenAi)))
        .layer(EdgeLayer::new(ApiFormat::OpenAi))
        .layer(
            ReadBodyLayer::new(state.policy.server.max_body_bytes).with_timeout(
                std::time::Duration::from_secs(state.policy.server.client_timeout_secs),
            ),
        )
        // `{"prompt": ...}` -> a chat request, before the chat path's parse.
        .layer(PromptLayer)
        .layer(ParseLayer::new(state.routing.clone(), false))
        .layer(TriageLayer::new(state.triage.clone()))
        .layer(DecideLayer)
        .option_layer(privacy(state))
        .service(Explain::new(state.triage.name()));
    BoxCloneSyncService::new(chain)
}

/// The privacy layer, when the policy has any `pii` rule.
fn privacy(state: &AppState) -> Option<PrivacyLayer> {
    let p = &state.policy;
    let any = p.pii.is_some() || p.routes.values().any(|r| r.pii.is_some());
    any.then(|| PrivacyLayer::new(p.clone(), state.metrics.clone()))
}

/// Access log and catch panic for the routes beside the chat path (models,
/// probes, metrics, 404/405).
pub fn around<S>(svc: S) -> RouteService
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    BoxCloneSyncService::new(
        ServiceBuilder::new()
            .layer(AccessLogLayer)
            .layer(CatchPanicLayer::new(None))
            .service(svc),
    )
}
