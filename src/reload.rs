//! Policy hot reload. On SIGHUP, or when the policy file changes (checked
//! every two seconds), the file is parsed and validated and a new state
//! built — reusing every backend whose config is unchanged (connections, a
//! loaded local model), the triage and the shared counters — and swapped in
//! at once. New local models finish loading before the swap. Requests in
//! flight, streams included, finish on the router they started with. An
//! invalid policy is refused, logged and counted
//! (`slmgate_policy_reloads_total{result="error"}`); the old one keeps serving.

use crate::config::Policy;
use crate::gateway::Gateway;
use crate::state::StateOptions;
use axum::response::Response;
use axum::Router;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};
use tower::Service;

/// The gateway that is serving now, swappable.
pub struct Live {
    current: RwLock<Gateway>,
    /// The policy file (None: the embedded default, nothing to reload).
    path: Option<PathBuf>,
    /// The file's modification time and length when last (re)loaded.
    seen: RwLock<Option<(SystemTime, u64)>>,
}

impl Live {
    pub fn new(gateway: Gateway, path: Option<PathBuf>) -> Arc<Live> {
        let seen = path.as_deref().and_then(stamp);
        Arc::new(Live {
            current: RwLock::new(gateway),
            path,
            seen: RwLock::new(seen),
        })
    }

    /// The gateway requests go to now.
    pub fn gateway(&self) -> Gateway {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Re-read the policy file and swap it in; `Err` (and the old policy
    /// kept) when it does not load.
    pub async fn reload(&self) -> Result<(), String> {
        let Some(path) = &self.path else {
            return Err("serving the embedded default policy: nothing to reload".into());
        };
        // Stamped before reading: a change made while this reload runs is
        // seen by the next check.
        let before = stamp(path);
        let old = self.gateway();
        let metrics = old.state().metrics.clone();
        let outcome = async {
            let policy = Policy::from_file(path)?;
            let state = old.state().reload(policy, StateOptions::from_process())?;
            state.wait_ready().await?;
            Ok::<_, String>(state)
        }
        .await;
        *self.seen.write().unwrap_or_else(|p| p.into_inner()) = before;
        match outcome {
            Ok(state) => {
                let hash = state.policy.source_hash.clone().unwrap_or_default();
                let fresh = Gateway::from_state(state);
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = fresh;
                metrics.policy_reloads.with_label_values(&["ok"]).inc();
                tracing::info!(policy = %path.display(), hash = %hash, "policy reloaded");
                Ok(())
            }
            Err(e) => {
                metrics.policy_reloads.with_label_values(&["error"]).inc();
                tracing::error!(policy = %path.display(), error = %e, "policy reload refused; the previous policy keeps serving");
                Err(e)
            }
        }
    }

    /// Whether the file changed since it was last (re)loaded.
    fn changed(&self) -> bool {
        let Some(path) = &self.path else {
            return false;
        };
        let now = stamp(path);
        now.is_some() && now != *self.seen.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Reload on SIGHUP and when the file changes, until the process ends.
    pub async fn watch(self: Arc<Self>) {
        if self.path.is_none() {
            return;
        }
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            #[cfg(unix)]
            let signal = async {
                match hup.as_mut() {
                    Some(h) => {
                        h.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let signal = std::future::pending::<()>();
            tokio::select! {
                _ = signal => {
                    tracing::info!("SIGHUP: reloading the policy");
                    let _ = self.reload().await;
                }
                _ = tick.tick() => {
                    if self.changed() {
                        tracing::info!("the policy file changed: reloading it");
                        let _ = self.reload().await;
                    }
                }
            }
        }
    }
}

fn stamp(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// The live gateway as one service: each request goes to the gateway that
/// is current when it arrives.
#[derive(Clone)]
pub struct LiveService(pub Arc<Live>);

impl<B> Service<http::Request<B>> for LiveService
where
    B: axum::body::HttpBody<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = <Router as Service<http::Request<B>>>::Future;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // A router is always ready; this one is the current gateway's.
        let mut router: Router = self.0.gateway().router();
        router.call(req)
    }
}
