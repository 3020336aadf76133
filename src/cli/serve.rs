//! `slmgate serve | check | models fetch`, and what they share: loading the
//! policy and fetching missing default models.

use crate::config::{BackendConfig, Policy};
use crate::state::{models_dir, AppState, StateOptions};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Load the policy from a file, or the embedded default.
pub fn load_policy(path: Option<&Path>) -> Result<Policy, String> {
    match path {
        Some(p) => Policy::from_file(p),
        None => Policy::embedded_default().map_err(|e| format!("embedded default policy: {e}")),
    }
}

/// Fetch missing default models when the policy needs them (first start).
pub(super) fn ensure_models(policy: &Policy, dir: &Path) -> Result<(), String> {
    let mut missing_fetchable = false;
    for (name, b) in &policy.backends {
        if let BackendConfig::Local(c) = b {
            let path = crate::backend::local::resolve_gguf(&c.gguf, dir);
            if path.exists() {
                continue;
            }
            if crate::fetch::is_fetchable(&c.gguf) {
                missing_fetchable = true;
            } else {
                return Err(format!(
                    "backend `{name}`: GGUF file {} does not exist; fix `backends.{name}.gguf` or put the file there",
                    path.display()
                ));
            }
        }
    }
    if policy.triage.kind == crate::config::TriageKind::Model {
        let enc = dir.join(&policy.triage.encoder_dir);
        if !enc.join("model.safetensors").exists() {
            if policy.triage.encoder_dir == "minilm" {
                missing_fetchable = true;
            } else {
                return Err(format!(
                    "triage encoder {} is missing; fix `triage.encoder_dir` or select `triage: {{kind: features}}`",
                    enc.display()
                ));
            }
        }
    }
    if missing_fetchable {
        eprintln!(
            "slmgate: default models missing in {}; fetching them (one time)...",
            dir.display()
        );
        crate::fetch::fetch_all(dir, false)?;
    }
    Ok(())
}

pub async fn serve(policy_path: Option<PathBuf>, listen: SocketAddr) -> Result<(), String> {
    let policy = load_policy(policy_path.as_deref())?;
    let dir = models_dir();
    ensure_models(&policy, &dir)?;
    let grace = Duration::from_secs(policy.server.shutdown_grace_secs);
    let client_timeout = Duration::from_secs(policy.server.client_timeout_secs);
    let state = AppState::new(policy, StateOptions::from_process())?;
    for (name, b) in &state.policy.backends {
        let available = state
            .backends
            .get(name)
            .map(|x| x.availability().map_err(|e| e.error.to_string()));
        match available {
            Some(Err(why)) if b.kind() != "local" => tracing::warn!(backend = %name, "{why}"),
            _ => tracing::info!(backend = %name, kind = b.kind(), "backend configured"),
        }
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    tracing::info!(addr = %listen, keys = state.policy.keys.len(), shared_state = state.shared.store.is_shared(), "slmgate listening");
    if state.keys.is_empty() && !listen.ip().is_loopback() {
        let warning = format!(
            "the policy has no keys and slmgate listens on {listen}: ANYONE who can reach it can spend your cloud keys; add keys with `slmgate keys add --policy FILE --name NAME`"
        );
        tracing::warn!("{warning}");
        eprintln!("slmgate: WARNING: {warning}");
    }
    // A local model that fails to load is a startup error: stop the process.
    let watcher = state.clone();
    tokio::spawn(async move {
        match watcher.wait_ready().await {
            Ok(()) => tracing::info!("ready"),
            Err(e) => {
                tracing::error!(error = %e, "startup failed");
                eprintln!("slmgate: {e}");
                std::process::exit(1);
            }
        }
    });
    // The policy file is watched (SIGHUP, or a change on disk) and a valid
    // new one swapped in without a restart; see `reload`.
    let live = crate::reload::Live::new(crate::gateway::Gateway::from_state(state), policy_path);
    tokio::spawn(live.clone().watch());
    let served = crate::server::serve(
        listener,
        crate::reload::LiveService(live.clone()),
        grace,
        client_timeout,
    )
    .await
    .map_err(|e| format!("server error: {e}"));
    // What the last answers cost reaches the shared budgets before exit.
    let shared = live.gateway().state().shared.clone();
    shared.drain(Duration::from_secs(5)).await;
    served
}

pub fn check(path: &Path) -> Result<String, String> {
    let p = Policy::from_file(path)?;
    let models: usize = p.backends.values().map(|b| b.models().len()).sum();
    Ok(format!(
        "{}: ok ({} backends, {} models, {} routes)",
        path.display(),
        p.backends.len(),
        models,
        p.routes.len()
    ))
}

pub fn models_fetch(dir: Option<PathBuf>) -> Result<(), String> {
    let dir = dir.unwrap_or_else(models_dir);
    crate::fetch::fetch_all(&dir, false)?;
    eprintln!("models ready in {}", dir.display());
    Ok(())
}
