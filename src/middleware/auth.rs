//! Authenticate (present only when the policy has keys): the caller's
//! virtual key, from `Authorization: Bearer <key>` or `x-api-key`, checked
//! against the policy's salted hashes before the body is read. A missing or
//! unknown key is a 401 in the client's format (rendered by the edge,
//! counted by the meter); a valid one puts its `Caller` in the request (and
//! on the answer, where the meter reads the key's name). The key itself is
//! never logged or echoed.

use super::stage::{Stage, Staged};
use crate::error::GatewayError;
use crate::keys::{presented, Caller, Keys};
use axum::response::{IntoResponse, Response};
use http::Request;
use std::sync::Arc;
use tower::Layer;

#[derive(Clone)]
pub struct AuthLayer {
    keys: Arc<Keys>,
}

impl AuthLayer {
    pub fn new(keys: Arc<Keys>) -> Self {
        Self { keys }
    }
}

/// Authentication around the next service.
pub type Auth<S> = Staged<AuthLayer, S>;

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Auth<S> {
        Staged::new(self.clone(), inner)
    }
}

impl<B: Send + 'static> Stage<B> for AuthLayer {
    type Carry = Caller;

    fn before(&self, req: &mut Request<B>) -> Result<Caller, Response> {
        let caller = match presented(req.headers()) {
            None => Err(GatewayError::Unauthorized(
                "missing API key: send `Authorization: Bearer <key>` (or `x-api-key: <key>`)"
                    .into(),
            )),
            Some(k) => self
                .keys
                .verify(k)
                .cloned()
                .ok_or_else(|| GatewayError::Unauthorized("invalid API key".into())),
        }
        .map_err(IntoResponse::into_response)?;
        req.extensions_mut().insert(caller.clone());
        Ok(caller)
    }

    async fn after(&self, caller: Caller, mut resp: Response) -> Response {
        resp.extensions_mut().insert(caller);
        resp
    }
}
