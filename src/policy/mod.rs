//! Routing decisions as pure functions over the policy, plus cost math.
//! Everything a decision can be is built once per policy (`Routing`): a
//! request resolves its `model` to what it names and picks a prebuilt
//! decision, so deciding allocates nothing.

pub mod cost;

pub use crate::config::{Target, CATEGORIES};

use crate::config::{Policy, Tier};
use std::collections::HashMap;
use std::sync::Arc;

/// The policy's answer for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteDecision {
    /// `auto:<tier>` for routed requests, `direct` for explicit models.
    pub route: String,
    /// The chosen target first, then fallbacks in order, without repeats.
    pub targets: Vec<Target>,
}

/// What the client asked for, resolved against the policy.
#[derive(Debug)]
pub enum Requested {
    /// A routing alias such as `auto`: its tiers, first match wins.
    Route {
        name: String,
        tiers: Vec<(Tier, Arc<RouteDecision>)>,
    },
    /// A configured model (by id, alias or `backend/model`): routed to it,
    /// then its fallbacks.
    Model(Arc<RouteDecision>),
}

impl Requested {
    /// An explicit model: the triage score only labels the answer.
    pub fn is_explicit(&self) -> bool {
        matches!(self, Requested::Model(_))
    }

    /// Pick the decision for a triage verdict (`score`, `category`, and the
    /// calibrated `local_success` when a success head is loaded).
    pub fn decide(
        &self,
        score: f64,
        category: &str,
        local_success: Option<f64>,
    ) -> Arc<RouteDecision> {
        match self {
            Requested::Model(d) => d.clone(),
            Requested::Route { name, tiers } => {
                let hit = tiers.iter().find(|(t, _)| {
                    t.min_score.is_none_or(|lo| score >= lo)
                        && t.max_score.is_none_or(|hi| score < hi)
                        && t.categories
                            .as_ref()
                            .is_none_or(|cs| cs.iter().any(|c| c == category))
                        && t.min_local_success
                            .is_none_or(|lo| local_success.is_some_and(|s| s >= lo))
                });
                // validate() guarantees a last tier without conditions.
                match hit.or(tiers.last()) {
                    Some((_, d)) => d.clone(),
                    None => Arc::new(RouteDecision {
                        route: name.clone(),
                        targets: vec![],
                    }),
                }
            }
        }
    }
}

/// Client-visible ids -> what they mean, with every decision prebuilt.
#[derive(Debug, Default)]
pub struct Routing {
    ids: HashMap<String, Arc<Requested>>,
}

/// The primary target then the fallbacks, without repeats.
fn decision(route: String, primary: Target, fallbacks: &[String]) -> Arc<RouteDecision> {
    let mut targets = vec![primary];
    for f in fallbacks.iter().filter_map(|f| Target::parse(f)) {
        if !targets.contains(&f) {
            targets.push(f);
        }
    }
    Arc::new(RouteDecision { route, targets })
}

impl Routing {
    pub fn new(p: &Policy) -> Self {
        let mut ids = HashMap::new();
        for (name, r) in &p.routes {
            let tiers = r
                .tiers
                .iter()
                .filter_map(|t| {
                    let primary = Target::parse(&t.target)?;
                    let d = decision(format!("{name}:{}", t.name), primary, &r.fallbacks);
                    Some((t.clone(), d))
                })
                .collect();
            let route = Requested::Route {
                name: name.clone(),
                tiers,
            };
            ids.insert(name.clone(), Arc::new(route));
        }
        for (b, cfg) in &p.backends {
            for (m, mc) in cfg.models() {
                let t = Target {
                    backend: b.clone(),
                    model: m.clone(),
                };
                let key = t.to_string();
                let fallbacks = p.fallbacks.get(&key).map(Vec::as_slice).unwrap_or(&[]);
                let direct = Arc::new(Requested::Model(decision("direct".into(), t, fallbacks)));
                for id in std::iter::once(m).chain(mc.aliases.iter()) {
                    ids.insert(id.clone(), direct.clone());
                }
                ids.insert(key, direct);
            }
        }
        Self { ids }
    }

    pub fn resolve(&self, model: &str) -> Option<&Arc<Requested>> {
        self.ids.get(model)
    }

    /// Whether client id `id` names the same route or model as `r` (a model
    /// and its aliases do).
    pub fn same(&self, id: &str, r: &Arc<Requested>) -> bool {
        self.resolve(id).is_some_and(|x| Arc::ptr_eq(x, r))
    }
}

/// Whether `t` is on the local tier: in-process, or a self-hosted server.
pub fn is_local(policy: &Policy, t: &Target) -> bool {
    policy
        .backends
        .get(&t.backend)
        .is_some_and(|b| b.is_local())
}

/// `d` with only its local targets (else the policy's first local model);
/// `None` when the policy has no local model.
pub fn local_only(policy: &Policy, d: &RouteDecision) -> Option<Arc<RouteDecision>> {
    let mut targets: Vec<Target> = d
        .targets
        .iter()
        .filter(|t| is_local(policy, t))
        .cloned()
        .collect();
    if targets.is_empty() {
        // The in-process model first, else a self-hosted one.
        let (b, cfg) = policy
            .backends
            .iter()
            .find(|(_, c)| matches!(c, crate::config::BackendConfig::Local(_)))
            .or_else(|| policy.backends.iter().find(|(_, c)| c.is_local()))?;
        let m = cfg.models().keys().next()?;
        targets.push(Target {
            backend: b.clone(),
            model: m.clone(),
        });
    }
    Some(Arc::new(RouteDecision {
        route: d.route.clone(),
        targets,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy() -> Policy {
        Policy::from_yaml(
            r#"
version: 1
backends:
  cloud:
    kind: openai
    api_key_env: K
    base_url: http://x/v1
    models:
      big: { input_per_mtok: 2.5, output_per_mtok: 10 }
      small: { input_per_mtok: 0.15, output_per_mtok: 0.6, aliases: [mini] }
routes:
  auto:
    tiers:
      - { name: code, categories: [code], min_score: 0.3, target: cloud/big }
      - { name: simple, max_score: 0.5, target: cloud/small }
      - { name: hard, target: cloud/big }
    fallbacks: [cloud/small, cloud/big]
fallbacks:
  cloud/big: [cloud/small]
"#,
        )
        .expect("valid")
    }

    #[test]
    fn tiers_pick_in_order() {
        let routing = Routing::new(&policy());
        let auto = routing.resolve("auto").expect("route");
        assert!(!auto.is_explicit());
        let d = auto.decide(0.2, "chat", None);
        assert_eq!(d.route, "auto:simple");
        assert_eq!(d.targets[0].to_string(), "cloud/small");
        assert_eq!(d.targets.len(), 2, "fallbacks deduplicated: {d:?}");
        assert_eq!(auto.decide(0.4, "code", None).route, "auto:code");
        assert_eq!(auto.decide(0.2, "code", None).route, "auto:simple");
        assert_eq!(auto.decide(0.5, "qa", None).route, "auto:hard");
    }

    #[test]
    fn explicit_models_use_index_and_fallbacks() {
        let idx = Routing::new(&policy());
        let r = idx.resolve("mini").expect("alias");
        assert!(r.is_explicit());
        let d = r.decide(0.9, "math", None);
        assert_eq!(d.route, "direct");
        assert_eq!(d.targets[0].model, "small");
        let big = idx.resolve("cloud/big").expect("qualified");
        let d = big.decide(0.0, "chat", None);
        assert_eq!(
            d.targets.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
            ["cloud/big", "cloud/small"]
        );
        assert!(idx.resolve("nope").is_none());
    }

    proptest! {
        #[test]
        fn every_score_finds_a_target(score in 0.0f64..=1.0, cat in 0usize..CATEGORIES.len()) {
            let routing = Routing::new(&policy());
            let d = routing.resolve("auto").expect("route").decide(score, CATEGORIES[cat], None);
            prop_assert!(!d.targets.is_empty());
            let mut seen = std::collections::HashSet::new();
            prop_assert!(d.targets.iter().all(|t| seen.insert(t.clone())));
        }
    }
}
