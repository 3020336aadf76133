//! `slmgate calibrate`: what the local model gets right, and the success head.

use super::serve::{ensure_models, load_policy};
use crate::backend::Environment;
use std::path::{Path, PathBuf};

pub async fn calibrate(
    policy_path: Option<PathBuf>,
    opts: &crate::calibrate::run::Options,
    head_out: Option<&Path>,
    target_accuracy: f64,
    json: bool,
) -> Result<(), String> {
    let policy = load_policy(policy_path.as_deref())?;
    let env = Environment::from_process();
    ensure_models(&policy, &env.models_dir)?;
    crate::calibrate::run::command(&policy, &env, opts, head_out, target_accuracy, json).await
}
