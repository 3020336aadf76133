//! `P(local succeeds | prompt)` as served: a logistic head on the triage
//! encoder's fast input, fitted by `slmgate calibrate --head-out`, with the
//! out-of-fold trade-off curve it was selected on.

use super::head::HeadFile;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CurvePoint {
    /// Route locally when `local_success >= threshold` ...
    pub threshold: f64,
    /// ... which keeps this share of prompts local ...
    pub local_share: f64,
    /// ... at this accuracy on them (out of fold).
    pub local_accuracy: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SuccessHead {
    pub version: u32,
    /// What was calibrated: `backend/model`.
    pub target: String,
    pub n: usize,
    /// Share of prompts the local model got right.
    pub base_rate: f64,
    /// Out-of-fold ROC AUC of `P(success)` against the outcomes.
    pub cv_auc: f64,
    /// Leave-one-source-out: pooled ROC AUC of `P(success)` on sources the
    /// head never saw (the figure the L2 strength is selected on).
    #[serde(default)]
    pub loso_auc: Option<f64>,
    /// Per held-out source: `{n, correct, auc}` (`auc` null when the source's
    /// outcomes are all one way; then `mean_score`).
    #[serde(default)]
    pub loso_by_source: Option<serde_json::Value>,
    pub curve: Vec<CurvePoint>,
    /// `hard_w`/`hard_b` here predict success.
    pub head: HeadFile,
}

impl SuccessHead {
    pub fn load(path: &Path) -> Result<SuccessHead, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read success head {}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| {
            format!(
                "{} is not a success head (from `slmgate calibrate --head-out`): {e}",
                path.display()
            )
        })
    }

    /// `P(success)` for the fast-input vector of a request.
    pub fn predict(&self, fast: &[f32]) -> f64 {
        self.head.predict(fast).0 as f64
    }

    /// The lowest threshold (most traffic local) whose out-of-fold local
    /// accuracy reaches `target`; None when no point does.
    pub fn threshold_for(&self, target: f64) -> Option<&CurvePoint> {
        self.curve
            .iter()
            .filter(|p| p.local_accuracy >= target)
            .max_by(|a, b| a.local_share.total_cmp(&b.local_share))
    }
}
