//! Parse: the client's JSON into the OpenAI pivot (`ParsedRequest`) — an
//! Anthropic `/v1/messages` body is translated here, on the way in, and
//! kept whole for Anthropic backends — and the requested `model` resolved
//! against the policy (`Requested`; 404 for a model it does not serve).

use super::stage::{Stage, Staged};
use crate::api::openai::ParsedRequest;
use crate::api::request::{chat_request, chat_request_map, json_object};
use crate::api::{AnthropicBody, ApiFormat};
use crate::error::GatewayError;
use crate::policy::{Requested, Routing};
use crate::translate::to_openai;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, Request};
use std::sync::Arc;
use tower::Layer;

#[derive(Clone)]
pub struct ParseLayer {
    routing: Arc<Routing>,
    log_prompts: bool,
}

impl ParseLayer {
    /// `log_prompts`: log the parsed messages at debug level (the policy's
    /// `server.log_prompts`; off by default, prompts are user data).
    pub fn new(routing: Arc<Routing>, log_prompts: bool) -> Self {
        Self {
            routing,
            log_prompts,
        }
    }
}

/// The parse stage around the next service.
pub type Parse<S> = Staged<ParseLayer, S>;

impl<S> Layer<S> for ParseLayer {
    type Service = Parse<S>;
    fn layer(&self, inner: S) -> Parse<S> {
        Staged::new(self.clone(), inner)
    }
}

impl Stage<Bytes> for ParseLayer {
    type Carry = ();

    fn before(&self, req: &mut Request<Bytes>) -> Result<(), Response> {
        let span = tracing::debug_span!("parse");
        let (parsed, requested) = span
            .in_scope(|| self.parse(req))
            .map_err(IntoResponse::into_response)?;
        req.extensions_mut().insert(parsed);
        req.extensions_mut().insert(requested);
        Ok(())
    }

    async fn after(&self, _: (), resp: Response) -> Response {
        resp
    }
}

impl ParseLayer {
    fn parse(&self, req: &Request<Bytes>) -> Result<(ParsedRequest, Arc<Requested>), GatewayError> {
        let client = req
            .extensions()
            .get::<ApiFormat>()
            .copied()
            .unwrap_or(ApiFormat::OpenAi);
        let parsed = parse_for(client, req.headers(), req.body())?;
        if self.log_prompts {
            tracing::debug!(messages = ?parsed.messages, "prompt");
        }
        let requested = self
            .routing
            .resolve(&parsed.model)
            .ok_or_else(|| GatewayError::ModelNotFound(parsed.model.clone()))?
            .clone();
        Ok((parsed, requested))
    }
}

/// A body in the client's format as the OpenAI pivot.
pub fn parse_for(
    client: ApiFormat,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<ParsedRequest, GatewayError> {
    match client {
        ApiFormat::OpenAi => chat_request(body),
        ApiFormat::Anthropic => {
            let body = json_object(body)?;
            let (raw, untranslatable) = to_openai::request(&body)?;
            let mut parsed = chat_request_map(raw)?;
            parsed.native = Some(Arc::new(AnthropicBody {
                body,
                untranslatable,
                beta: headers.get("anthropic-beta").cloned(),
            }));
            Ok(parsed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Policy;
    use crate::middleware::testing::{never, through};
    use serde_json::json;
    use tower::ServiceExt;

    fn layer() -> ParseLayer {
        let p = Policy::from_yaml(
            r#"
version: 1
backends:
  cloud: { kind: openai, api_key_env: K, base_url: "http://x/v1", models: { small: { input_per_mtok: 0, output_per_mtok: 0 } } }
routes:
  auto: { tiers: [ { name: all, target: cloud/small } ] }
"#,
        )
        .unwrap();
        ParseLayer::new(Arc::new(Routing::new(&p)), false)
    }

    fn req(client: ApiFormat, body: serde_json::Value) -> Request<Bytes> {
        let mut r = Request::new(Bytes::from(body.to_string()));
        r.extensions_mut().insert(client);
        r
    }

    #[tokio::test]
    async fn parses_into_the_pivot_and_resolves_the_model() {
        let body = json!({"model": "auto", "messages": [{"role": "user", "content": "hi"}], "stream": true});
        let (r, _) = through(layer(), req(ApiFormat::OpenAi, body)).await;
        let p = r.extensions().get::<ParsedRequest>().expect("parsed");
        assert!(p.stream && p.native.is_none());
        assert_eq!(p.messages[0].text, "hi");
        assert!(!r
            .extensions()
            .get::<Arc<Requested>>()
            .unwrap()
            .is_explicit());
    }

    /// Anthropic bodies are translated at this edge and kept for Anthropic backends.
    #[tokio::test]
    async fn translates_anthropic_requests_on_the_way_in() {
        let body = json!({"model": "small", "max_tokens": 9, "system": "be brief", "messages": [{"role": "user", "content": "hi"}]});
        let (r, _) = through(layer(), req(ApiFormat::Anthropic, body)).await;
        let p = r.extensions().get::<ParsedRequest>().expect("parsed");
        assert_eq!(p.messages[0].role, "system");
        assert_eq!(p.max_tokens, Some(9));
        assert!(p.native.is_some());
        assert!(r
            .extensions()
            .get::<Arc<Requested>>()
            .unwrap()
            .is_explicit());
    }

    #[tokio::test]
    async fn bad_bodies_and_unknown_models_never_reach_the_next_stage() {
        let svc = layer().layer(never::<Request<Bytes>>());
        let r = svc
            .clone()
            .oneshot(Request::new(Bytes::from_static(b"{nope")))
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let unknown = json!({"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]});
        let r = svc.oneshot(req(ApiFormat::OpenAi, unknown)).await.unwrap();
        assert_eq!(r.status(), 404);
        assert!(matches!(
            crate::error::failure(&r),
            Some(GatewayError::ModelNotFound(m)) if m == "gpt-9"
        ));
    }
}
