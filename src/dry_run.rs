//! `POST /v1/triage`: the triage verdict and the route the policy would
//! take, with nothing sent upstream. It runs the chat path's own parse,
//! triage and decide stages, with `PromptLayer` in front of parse (a bare
//! `prompt` becomes one user message; `model` defaults to `auto`) and
//! `Explain` as the leaf instead of dispatch.

use crate::classifier::TriageResult;
use crate::error::GatewayError;
use crate::middleware::missing;
use crate::middleware::stage::{Stage, Staged};
use crate::policy::RouteDecision;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::Request;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// The verdict and the route, as `/v1/triage` and `slmgate triage` show them.
pub fn explain(t: &TriageResult, d: &RouteDecision, triage: &str) -> Value {
    json!({
        "score": t.score,
        "category": t.category,
        "local_success": t.local_success,
        "route": d.route,
        "target": d.targets.first().map(|t| t.to_string()),
        "fallbacks": d.targets.iter().skip(1).map(|t| t.to_string()).collect::<Vec<_>>(),
        "triage": triage,
    })
}

/// `{"prompt": ...}` as a chat request; `model` defaults to `auto`.
pub fn as_chat_request(body: &[u8]) -> Result<Bytes, GatewayError> {
    let mut obj = crate::api::request::json_object(body)?;
    if let Some(p) = obj.remove("prompt") {
        let p = p
            .as_str()
            .ok_or_else(|| GatewayError::invalid("prompt", "`prompt` must be a string"))?
            .to_string();
        obj.insert("messages".into(), json!([{"role": "user", "content": p}]));
    }
    obj.entry("model")
        .or_insert_with(|| Value::String("auto".into()));
    serde_json::to_vec(&obj)
        .map(Bytes::from)
        .map_err(|e| GatewayError::Internal(e.to_string()))
}

#[derive(Debug, Clone, Copy, Default)]
pub struct PromptLayer;

impl<S> Layer<S> for PromptLayer {
    type Service = Staged<PromptLayer, S>;
    fn layer(&self, inner: S) -> Self::Service {
        Staged::new(*self, inner)
    }
}

impl Stage<Bytes> for PromptLayer {
    type Carry = ();

    fn before(&self, req: &mut Request<Bytes>) -> Result<(), Response> {
        *req.body_mut() = as_chat_request(req.body()).map_err(IntoResponse::into_response)?;
        Ok(())
    }

    async fn after(&self, _: (), resp: Response) -> Response {
        resp
    }
}

/// The leaf of the dry run: the verdict and the decision as JSON.
#[derive(Debug, Clone)]
pub struct Explain {
    triage: &'static str,
}

impl Explain {
    /// `triage`: the scorer's name, shown in the answer.
    pub fn new(triage: &'static str) -> Self {
        Self { triage }
    }
}

impl<B> Service<Request<B>> for Explain {
    type Response = Response;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let x = req.extensions();
        let r = match (x.get::<TriageResult>(), x.get::<Arc<RouteDecision>>()) {
            (Some(t), Some(d)) => {
                let mut v = explain(t, d, self.triage);
                if let Some(found) = x.get::<crate::privacy::PiiFound>() {
                    let kinds: serde_json::Map<String, Value> = found
                        .0
                        .iter()
                        .map(|(k, n)| (k.as_str().to_string(), json!(n)))
                        .collect();
                    v["pii"] = Value::Object(kinds);
                }
                axum::Json(v).into_response()
            }
            _ => missing("the triage verdict or route decision", "DecideLayer"),
        };
        std::future::ready(Ok(r))
    }
}
