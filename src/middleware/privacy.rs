//! Privacy, after decide (present when the policy has a `pii` rule): the
//! request's texts are scanned for personal and secret data
//! (`privacy::detect`; counted per kind, never logged) and the route's rule
//! (else the policy's) applied to the kinds it names: `local` keeps the
//! decision's local targets (else the policy's local model), `redact`
//! replaces each finding with `[KIND]` before any backend sees it, `reject`
//! answers 400. The answer says so in `x-slmgate-pii`. What was found is
//! left on the request (`PiiFound`) for `/v1/triage` to show.

use super::put_header;
use super::stage::{Stage, Staged};
use crate::api::openai::ParsedRequest;
use crate::config::{PiiAction, PiiRule, Policy};
use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::policy::{local_only, Requested, RouteDecision};
use crate::privacy::{redact_request, PiiFound};
use axum::response::{IntoResponse, Response};
use http::Request;
use std::sync::Arc;
use tower::Layer;

#[derive(Clone)]
pub struct PrivacyLayer {
    policy: Arc<Policy>,
    metrics: Arc<Metrics>,
}

impl PrivacyLayer {
    pub fn new(policy: Arc<Policy>, metrics: Arc<Metrics>) -> Self {
        Self { policy, metrics }
    }

    fn rule(&self, requested: Option<&Requested>) -> Option<&PiiRule> {
        let route = match requested {
            Some(Requested::Route { name, .. }) => self.policy.routes.get(name),
            _ => None,
        };
        route
            .and_then(|r| r.pii.as_ref())
            .or(self.policy.pii.as_ref())
    }
}

pub type Privacy<S> = Staged<PrivacyLayer, S>;

impl<S> Layer<S> for PrivacyLayer {
    type Service = Privacy<S>;
    fn layer(&self, inner: S) -> Privacy<S> {
        Staged::new(self.clone(), inner)
    }
}

impl<B: Send + 'static> Stage<B> for PrivacyLayer {
    /// The header to put on the answer.
    type Carry = Option<String>;

    fn before(&self, req: &mut Request<B>) -> Result<Option<String>, Response> {
        let Some(parsed) = req.extensions().get::<ParsedRequest>() else {
            return Ok(None);
        };
        let found = PiiFound::of(parsed);
        for (k, n) in &found.0 {
            self.metrics
                .pii_found
                .with_label_values(&[k.as_str()])
                .inc_by(*n as u64);
        }
        let requested = req.extensions().get::<Arc<Requested>>().cloned();
        let rule = self.rule(requested.as_deref()).cloned();
        req.extensions_mut().insert(found.clone());
        let Some(rule) = rule else {
            return Ok(None);
        };
        let kinds = found.names(|k| rule.covers(k));
        if kinds.is_empty() {
            return Ok(None);
        }
        self.metrics
            .pii_actions
            .with_label_values(&[rule.action.as_str()])
            .inc();
        match rule.action {
            PiiAction::Reject => Err(GatewayError::invalid(
                "messages",
                format!("the request contains personal or secret data ({kinds}); this route does not accept it"),
            )
            .into_response()),
            PiiAction::Redact => {
                if let Some(p) = req.extensions_mut().get_mut::<ParsedRequest>() {
                    redact_request(p, &|k| rule.covers(k));
                }
                Ok(Some(format!("redacted {kinds}")))
            }
            PiiAction::Local => {
                let decision = req.extensions().get::<Arc<RouteDecision>>().cloned();
                let local = decision.and_then(|d| local_only(&self.policy, &d));
                match local {
                    Some(l) => {
                        req.extensions_mut().insert(l);
                        Ok(Some(format!("local {kinds}")))
                    }
                    None => Err(GatewayError::invalid(
                        "messages",
                        format!("the request contains personal or secret data ({kinds}) and the policy has no local model to keep it on"),
                    )
                    .into_response()),
                }
            }
        }
    }

    async fn after(&self, header: Option<String>, mut resp: Response) -> Response {
        if let Some(h) = header {
            put_header(resp.headers_mut(), "x-slmgate-pii", &h);
        }
        resp
    }
}
