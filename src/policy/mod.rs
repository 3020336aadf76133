//! Routing decisions as pure functions over the policy, plus cost math.

pub mod cost;
pub mod validate;

use crate::config::Policy;
use std::collections::HashMap;
use std::fmt;

/// Triage categories the policy may route on.
pub const CATEGORIES: &[&str] = &[
    "chat",
    "extraction",
    "classification",
    "summarization",
    "rewriting",
    "creative",
    "qa",
    "reasoning",
    "math",
    "code",
];

/// A concrete `backend/model` pair.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub backend: String,
    pub model: String,
}

impl Target {
    pub fn parse(s: &str) -> Option<Target> {
        let (b, m) = s.split_once('/')?;
        (!b.is_empty() && !m.is_empty()).then(|| Target {
            backend: b.to_string(),
            model: m.to_string(),
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.backend, self.model)
    }
}

/// What the client asked for, resolved against the policy.
#[derive(Debug, Clone, PartialEq)]
pub enum Requested {
    /// A routing alias such as `auto`.
    Route(String),
    /// A configured model (by id, alias or `backend/model`).
    Model(Target),
}

/// Client-visible ids -> what they mean. Built once per policy.
#[derive(Debug, Clone, Default)]
pub struct ModelIndex {
    ids: HashMap<String, Requested>,
}

impl ModelIndex {
    pub fn new(p: &Policy) -> Self {
        let mut ids = HashMap::new();
        for name in p.routes.keys() {
            ids.insert(name.clone(), Requested::Route(name.clone()));
        }
        for (b, cfg) in &p.backends {
            for (m, mc) in cfg.models() {
                let t = Target {
                    backend: b.clone(),
                    model: m.clone(),
                };
                ids.insert(format!("{b}/{m}"), Requested::Model(t.clone()));
                for id in std::iter::once(m).chain(mc.aliases.iter()) {
                    ids.insert(id.clone(), Requested::Model(t.clone()));
                }
            }
        }
        Self { ids }
    }

    pub fn resolve(&self, model: &str) -> Option<&Requested> {
        self.ids.get(model)
    }
}

/// The policy's answer for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteDecision {
    /// `auto:<tier>` for routed requests, `direct` for explicit models.
    pub route: String,
    /// The chosen target first, then fallbacks in order, without repeats.
    pub targets: Vec<Target>,
}

/// Pick targets for a request. `score`/`category` come from triage.
pub fn decide(
    p: &Policy,
    requested: &Requested,
    score: f64,
    category: &str,
    local_success: Option<f64>,
) -> RouteDecision {
    let (route, primary, fallbacks): (String, Target, &[String]) = match requested {
        Requested::Model(t) => (
            "direct".to_string(),
            t.clone(),
            p.fallbacks
                .get(&t.to_string())
                .map(Vec::as_slice)
                .unwrap_or(&[]),
        ),
        Requested::Route(name) => {
            // validate() guarantees the route exists, has tiers and ends in a catch-all.
            let Some(r) = p.routes.get(name) else {
                return RouteDecision {
                    route: name.clone(),
                    targets: vec![],
                };
            };
            let tier = r.tiers.iter().find(|t| {
                t.min_score.is_none_or(|lo| score >= lo)
                    && t.max_score.is_none_or(|hi| score < hi)
                    && t.categories
                        .as_ref()
                        .is_none_or(|cs| cs.iter().any(|c| c == category))
                    && t.min_local_success
                        .is_none_or(|lo| local_success.is_some_and(|s| s >= lo))
            });
            let Some(tier) = tier.or(r.tiers.last()) else {
                return RouteDecision {
                    route: name.clone(),
                    targets: vec![],
                };
            };
            let Some(t) = Target::parse(&tier.target) else {
                return RouteDecision {
                    route: name.clone(),
                    targets: vec![],
                };
            };
            (format!("{name}:{}", tier.name), t, r.fallbacks.as_slice())
        }
    };
    let mut targets = vec![primary];
    for f in fallbacks.iter().filter_map(|f| Target::parse(f)) {
        if !targets.contains(&f) {
            targets.push(f);
        }
    }
    RouteDecision { route, targets }
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
        let p = policy();
        let auto = Requested::Route("auto".into());
        let d = decide(&p, &auto, 0.2, "chat", None);
        assert_eq!(d.route, "auto:simple");
        assert_eq!(d.targets[0].to_string(), "cloud/small");
        assert_eq!(d.targets.len(), 2, "fallbacks deduplicated: {d:?}");
        assert_eq!(decide(&p, &auto, 0.4, "code", None).route, "auto:code");
        assert_eq!(decide(&p, &auto, 0.2, "code", None).route, "auto:simple");
        assert_eq!(decide(&p, &auto, 0.5, "qa", None).route, "auto:hard");
    }

    #[test]
    fn explicit_models_use_index_and_fallbacks() {
        let p = policy();
        let idx = ModelIndex::new(&p);
        let r = idx.resolve("mini").expect("alias").clone();
        let d = decide(&p, &r, 0.9, "math", None);
        assert_eq!(d.route, "direct");
        assert_eq!(d.targets[0].model, "small");
        let big = idx.resolve("cloud/big").expect("qualified").clone();
        let d = decide(&p, &big, 0.0, "chat", None);
        assert_eq!(
            d.targets.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
            ["cloud/big", "cloud/small"]
        );
        assert!(idx.resolve("nope").is_none());
    }

    proptest! {
        #[test]
        fn every_score_finds_a_target(score in 0.0f64..=1.0, cat in 0usize..CATEGORIES.len()) {
            let p = policy();
            let d = decide(&p, &Requested::Route("auto".into()), score, CATEGORIES[cat], None);
            prop_assert!(!d.targets.is_empty());
            let mut seen = std::collections::HashSet::new();
            prop_assert!(d.targets.iter().all(|t| seen.insert(t.clone())));
        }
    }
}
