//! Cross-field checks on a parsed policy. Every message names the field and
//! says how to fix it.

use super::{BackendConfig, Policy, Target, TriageKind, CATEGORIES};
use std::collections::BTreeMap;

pub fn validate(p: &Policy) -> Result<(), String> {
    let mut errors = Vec::new();
    if p.version != 1 {
        errors.push(format!(
            "`version`: {} is not supported; set `version: 1`",
            p.version
        ));
    }
    if p.backends.is_empty() {
        errors.push(
            "`backends`: no backend defined; add at least one (kind: openai, anthropic or local)"
                .into(),
        );
    }
    if p.server.max_body_bytes < 1024 {
        errors.push("`server.max_body_bytes`: must be at least 1024".into());
    }
    // Every client-visible id (model names, aliases, route names) must be unique.
    let mut ids: BTreeMap<String, String> = BTreeMap::new();
    for name in p.routes.keys() {
        ids.insert(name.clone(), format!("routes.{name}"));
    }
    for (bname, b) in &p.backends {
        if bname.is_empty()
            || !bname
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            errors.push(format!(
                "`backends.{bname}`: backend names use letters, digits, '-' and '_' only"
            ));
        }
        check_backend(bname, b, &mut errors);
        for (mname, m) in b.models() {
            if m.input_per_mtok.is_sign_negative() || m.output_per_mtok.is_sign_negative() {
                errors.push(format!(
                    "`backends.{bname}.models.{mname}`: prices must be >= 0 (USD per million tokens)"
                ));
            }
            if let Some(d) = &m.defaults {
                // Anthropic's API takes temperatures up to 1.
                let hot = if b.kind() == "anthropic" { 1.0 } else { 2.0 };
                let bad = d.temperature.is_some_and(|t| !(0.0..=hot).contains(&t))
                    || d.top_p.is_some_and(|p| !(0.0..=1.0).contains(&p))
                    || d.max_tokens == Some(0);
                if bad {
                    errors.push(format!(
                        "`backends.{bname}.models.{mname}.defaults`: temperature in [0, {hot}], top_p in [0, 1], max_tokens >= 1"
                    ));
                }
            }
            for id in std::iter::once(mname).chain(m.aliases.iter()) {
                let here = format!("backends.{bname}.models.{mname}");
                if let Some(prev) = ids.insert(id.clone(), here.clone()) {
                    errors.push(format!(
                        "`{here}`: model id `{id}` is already used by `{prev}`; ids, aliases and route names must be unique"
                    ));
                }
            }
        }
    }
    let check_target = |field: &str, t: &str, errors: &mut Vec<String>| match Target::parse(t) {
        Some(tg)
            if p.backends
                .get(&tg.backend)
                .is_some_and(|b| b.models().contains_key(&tg.model)) => {}
        _ => errors.push(format!(
            "`{field}`: `{t}` is not a configured `backend/model`; use one of: {}",
            all_targets(p).join(", ")
        )),
    };
    if let Some(r) = &p.reference_model {
        check_target("reference_model", r, &mut errors);
    }
    for (rname, r) in &p.routes {
        if r.tiers.is_empty() {
            errors.push(format!("`routes.{rname}.tiers`: add at least one tier"));
        }
        for (i, t) in r.tiers.iter().enumerate() {
            let f = format!("routes.{rname}.tiers[{i}]");
            check_target(&format!("{f}.target"), &t.target, &mut errors);
            if t.min_local_success.is_some()
                && (p.triage.kind != TriageKind::Model || p.triage.local_success_head.is_none())
            {
                errors.push(format!(
                    "`{f}.min_local_success`: needs `triage: {{kind: model, local_success_head: FILE}}` (FILE from `slmgate calibrate --head-out`)"
                ));
            }
            for (k, v) in [
                ("min_score", t.min_score),
                ("max_score", t.max_score),
                ("min_local_success", t.min_local_success),
            ] {
                if let Some(v) = v {
                    if !(0.0..=1.0).contains(&v) {
                        errors.push(format!("`{f}.{k}`: {v} is outside [0, 1]"));
                    }
                }
            }
            if let (Some(lo), Some(hi)) = (t.min_score, t.max_score) {
                if lo >= hi {
                    errors.push(format!(
                        "`{f}`: min_score {lo} must be below max_score {hi}"
                    ));
                }
            }
            for c in t.categories.iter().flatten() {
                if !CATEGORIES.contains(&c.as_str()) {
                    errors.push(format!(
                        "`{f}.categories`: unknown category `{c}`; use one of: {}",
                        CATEGORIES.join(", ")
                    ));
                }
            }
        }
        if r.tiers.last().is_some_and(|t| !t.is_catch_all()) {
            errors.push(format!(
                "`routes.{rname}.tiers`: the last tier must have no conditions (no min_score, max_score, categories or min_local_success) so every request finds a target"
            ));
        }
        for (i, f) in r.fallbacks.iter().enumerate() {
            check_target(&format!("routes.{rname}.fallbacks[{i}]"), f, &mut errors);
        }
    }
    for (from, tos) in &p.fallbacks {
        check_target(&format!("fallbacks.{from}"), from, &mut errors);
        for (i, t) in tos.iter().enumerate() {
            check_target(&format!("fallbacks.{from}[{i}]"), t, &mut errors);
        }
    }
    if let Some(s) = &p.shadow {
        if !(0.0..=1.0).contains(&s.sample_rate) {
            errors.push(format!(
                "`shadow.sample_rate`: {} is outside [0, 1]",
                s.sample_rate
            ));
        }
        if !(0.0..=1.0).contains(&s.agree_threshold) {
            errors.push(format!(
                "`shadow.agree_threshold`: {} is outside [0, 1]",
                s.agree_threshold
            ));
        }
        if s.max_in_flight == 0 {
            errors.push("`shadow.max_in_flight`: must be >= 1".into());
        }
        if p.triage.kind != TriageKind::Model {
            errors.push(
                "`shadow`: comparing answers needs the MiniLM encoder: set `triage: {kind: model}`"
                    .into(),
            );
        }
        match s.target(p) {
            None => errors
                .push("`shadow.target`: name a `backend/model` (or set `reference_model`)".into()),
            Some(t) => {
                check_target("shadow.target", t, &mut errors);
                let backend = t.split('/').next().unwrap_or("");
                if p.backends.get(backend).is_some_and(|b| b.is_local()) {
                    errors.push(format!(
                        "`shadow.target`: `{t}` is local; shadow against a cloud model"
                    ));
                }
            }
        }
    }
    check_keys(p, &ids, &mut errors);
    if let Some(exact) = p.cache.as_ref().and_then(|c| c.exact.as_ref()) {
        if exact.shared && p.state.is_none() {
            errors.push(
                "`cache.exact.shared`: needs `state: {redis_url: ...}` to share answers through"
                    .into(),
            );
        }
        if exact.max_bytes == 0 || exact.max_entry_bytes == 0 || exact.ttl_secs == 0 {
            errors.push(
                "`cache.exact`: `max_bytes`, `max_entry_bytes` and `ttl_secs` must be above 0"
                    .into(),
            );
        }
    }
    let semantic = p.cache.as_ref().and_then(|c| c.semantic.as_ref());
    if let Some(sem) = semantic {
        if !(0.0..=1.0).contains(&sem.threshold) || sem.max_entries == 0 || sem.ttl_secs == 0 {
            errors.push(
                "`cache.semantic`: `threshold` in [0, 1], `max_entries` and `ttl_secs` above 0"
                    .into(),
            );
        }
    }
    for (name, r) in &p.routes {
        if r.semantic_cache && semantic.is_none() {
            errors.push(format!(
                "`routes.{name}.semantic_cache`: needs `cache.semantic` (e.g. `cache: {{semantic: {{threshold: 0.9}}}}`)"
            ));
        }
    }
    if let Some(st) = &p.state {
        if !st.redis_url.starts_with("redis://") {
            errors.push(format!(
                "`state.redis_url`: `{}` is not a redis:// URL (e.g. redis://127.0.0.1:6379)",
                crate::store::resp::redact_url(&st.redis_url)
            ));
        }
        if st.timeout_ms == 0 {
            errors.push("`state.timeout_ms`: must be above 0".into());
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n"))
    }
}

/// Names, ids and hashes in the shape `slmgate keys add` writes; known
/// models; limits above zero.
fn check_keys(p: &Policy, ids: &BTreeMap<String, String>, errors: &mut Vec<String>) {
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let mut seen = BTreeMap::new();
    for (name, k) in &p.keys {
        let f = format!("keys.{name}");
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            errors.push(format!(
                "`{f}`: key names use letters, digits, '-' and '_' only"
            ));
        }
        if !hex(&k.id, 8) {
            errors.push(format!(
                "`{f}.id`: must be 8 hex digits, as written by `slmgate keys add`"
            ));
        } else if let Some(prev) = seen.insert(k.id.clone(), name.clone()) {
            errors.push(format!(
                "`{f}.id`: `{}` is also the id of `keys.{prev}`",
                k.id
            ));
        }
        let parts: Vec<&str> = k.hash.split(':').collect();
        if !(parts.len() == 3 && parts[0] == "sha256" && hex(parts[1], 32) && hex(parts[2], 64)) {
            errors.push(format!(
                "`{f}.hash`: must be `sha256:<32 hex salt>:<64 hex digest>`; create keys with `slmgate keys add`"
            ));
        }
        for m in k.models.iter().flatten() {
            let qualified = Target::parse(m).is_some_and(|t| {
                p.backends
                    .get(&t.backend)
                    .is_some_and(|b| b.models().contains_key(&t.model))
            });
            if !ids.contains_key(m) && !qualified {
                errors.push(format!(
                    "`{f}.models`: `{m}` is neither a route nor a configured model"
                ));
            }
        }
        for (what, v) in [("rpm", k.rpm), ("tpm", k.tpm)] {
            if v == Some(0) {
                errors.push(format!(
                    "`{f}.{what}`: must be above 0 (leave it out for no limit)"
                ));
            }
        }
        for (what, v) in [
            ("budget_usd_day", k.budget_usd_day),
            ("budget_usd_month", k.budget_usd_month),
        ] {
            if v.is_some_and(|d| d.is_sign_negative()) {
                errors.push(format!("`{f}.{what}`: must be >= 0"));
            }
        }
    }
}

fn check_backend(bname: &str, b: &BackendConfig, errors: &mut Vec<String>) {
    if let Some(c) = b.cloud() {
        if c.api_key_env.trim().is_empty() && !b.is_local() {
            errors.push(format!(
                "`backends.{bname}.api_key_env`: name the environment variable that holds the API key, e.g. OPENAI_API_KEY (only a `self_hosted: true` backend may go without)"
            ));
        }
        let replicas = !c.base_urls.is_empty();
        if c.base_url.is_none() && c.base_url_env.is_none() && !replicas {
            errors.push(format!(
                "`backends.{bname}`: set `base_url` (e.g. https://api.openai.com/v1), `base_url_env` or `base_urls`"
            ));
        }
        if replicas && (c.base_url.is_some() || c.base_url_env.is_some()) {
            errors.push(format!(
                "`backends.{bname}`: `base_urls` lists every replica; leave out `base_url` and `base_url_env`"
            ));
        }
        for (field, u) in c
            .base_url
            .iter()
            .map(|u| ("base_url", *u))
            .chain(c.base_urls.iter().map(|u| ("base_urls", u.as_str())))
        {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                errors.push(format!(
                    "`backends.{bname}.{field}`: `{u}` must start with http:// or https://"
                ));
            }
        }
        let e = c.eject;
        let secs_ok = e.secs > 0.0 && e.max_secs >= e.secs && e.max_secs <= 86_400.0;
        if e.failures == 0 || !secs_ok {
            errors.push(format!(
                "`backends.{bname}.eject`: failures >= 1 and 0 < secs <= max_secs <= 86400"
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for u in c.base_urls {
            if !seen.insert(u.trim_end_matches('/')) {
                errors.push(format!(
                    "`backends.{bname}.base_urls`: `{u}` is listed twice"
                ));
            }
        }
        let t = c.timeouts;
        if t.connect_ms == 0 || t.first_byte_ms == 0 || t.idle_ms == 0 || t.total_ms == 0 {
            errors.push(format!(
                "`backends.{bname}.timeouts`: every timeout must be > 0 ms"
            ));
        }
        if b.models().is_empty() {
            errors.push(format!(
                "`backends.{bname}.models`: list at least one model with its prices"
            ));
        }
    }
    if b.max_concurrency() == Some(0) {
        errors.push(format!(
            "`backends.{bname}.max_concurrency`: must be >= 1 (leave it out for the default, 512)"
        ));
    }
    match b {
        BackendConfig::Openai(_) => {}
        BackendConfig::Anthropic(c) => {
            if c.default_max_tokens == 0 {
                errors.push(format!(
                    "`backends.{bname}.default_max_tokens`: must be >= 1"
                ));
            }
        }
        BackendConfig::Local(c) => {
            if c.gguf.trim().is_empty() {
                errors.push(format!(
                    "`backends.{bname}.gguf`: give the path of a GGUF file"
                ));
            }
            if c.models.len() != 1 {
                errors.push(format!(
                    "`backends.{bname}.models`: a local backend serves exactly one model (found {}); use `aliases` for more ids",
                    c.models.len()
                ));
            }
            if c.engine == super::LocalEngine::Llamacpp && !cfg!(feature = "llamacpp") {
                errors.push(format!(
                    "`backends.{bname}.engine`: `llamacpp` is not available in this build (build with `--features llamacpp`); use `mistralrs`"
                ));
            }
            if c.max_queue == 0 || c.max_batch() == 0 {
                errors.push(format!(
                    "`backends.{bname}`: max_queue and max_batch must be >= 1"
                ));
            }
        }
    }
}

fn all_targets(p: &Policy) -> Vec<String> {
    p.backends
        .iter()
        .flat_map(|(b, c)| c.models().keys().map(move |m| format!("{b}/{m}")))
        .collect()
}
