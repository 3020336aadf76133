//! Loading a local model, for both engines: where its file is, a cheap check
//! of it before the (slow) load, and how a load's end is logged and published
//! to `/readyz` and the request path.

use super::{LoadState, Ready};
use crate::config::LocalEngine;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tokio::sync::watch;

/// A load's outcome from its task: the model, its error, or its panic.
pub(super) fn load_outcome<T, E: std::fmt::Display>(
    shown: &str,
    r: Result<Result<T, E>, tokio::task::JoinError>,
) -> Result<T, String> {
    match r {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(e)) => Err(format!("loading {shown} failed: {e}")),
        Err(e) => Err(format!("loading {shown} crashed: {e}")),
    }
}

/// Log a load's end and publish it to `/readyz` and the request path.
pub(super) fn publish_load(
    tx: &watch::Sender<LoadState>,
    bname: &str,
    shown: &str,
    engine: LocalEngine,
    t0: Instant,
    r: Result<(Ready, Option<usize>), String>,
) {
    let state = match r {
        Ok((ready, ctx)) => {
            tracing::info!(backend = %bname, file = %shown, ?engine, ctx, secs = t0.elapsed().as_secs_f64(), "local model loaded");
            LoadState::Ready(ready)
        }
        Err(e) => {
            tracing::error!(backend = %bname, error = %e, "local model failed to load");
            LoadState::Failed(e)
        }
    };
    let _ = tx.send(state);
}

/// Resolve a policy's GGUF path against the models dir.
pub fn resolve_gguf(gguf: &str, models_dir: &Path) -> PathBuf {
    let p = Path::new(gguf);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        models_dir.join(p)
    }
}

/// Cheap sanity check before the (slow) load: present, a file, GGUF magic.
pub fn check_gguf(path: &Path) -> Result<(), String> {
    use std::io::Read;
    let hint = "run `slmgate models fetch` (or point the policy's `gguf` at an existing file)";
    let mut f = std::fs::File::open(path).map_err(|e| {
        format!(
            "GGUF file {} cannot be opened ({e}); {hint}",
            path.display()
        )
    })?;
    let mut magic = [0u8; 4];
    f.read_exact(&mut magic)
        .map_err(|_| format!("GGUF file {} is truncated; {hint}", path.display()))?;
    if &magic != b"GGUF" {
        return Err(format!(
            "{} is not a GGUF file (bad magic); {hint}",
            path.display()
        ));
    }
    Ok(())
}
