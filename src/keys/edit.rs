//! `slmgate keys add | revoke`: change the `keys:` section of a policy file
//! as text, so the rest of the file — its comments, order and layout —
//! stays as it was. The result must parse and validate before it replaces
//! the file (written to a temporary file beside it, then renamed).

use crate::config::Policy;
use std::path::Path;

/// A key's entry as it goes into the file.
#[derive(Debug, Default, Clone)]
pub struct Entry {
    pub name: String,
    pub id: String,
    pub hash: String,
    pub models: Option<Vec<String>>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub budget_usd_day: Option<String>,
    pub budget_usd_month: Option<String>,
    pub admin: bool,
}

impl Entry {
    fn lines(&self, indent: &str) -> Vec<String> {
        let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
        let mut out = vec![
            format!("{indent}{}:", self.name),
            format!("{indent}  id: {}", q(&self.id)),
            format!("{indent}  hash: {}", q(&self.hash)),
        ];
        if let Some(m) = &self.models {
            let list: Vec<String> = m.iter().map(|x| q(x)).collect();
            out.push(format!("{indent}  models: [{}]", list.join(", ")));
        }
        for (k, v) in [("rpm", self.rpm), ("tpm", self.tpm)] {
            if let Some(v) = v {
                out.push(format!("{indent}  {k}: {v}"));
            }
        }
        for (k, v) in [
            ("budget_usd_day", &self.budget_usd_day),
            ("budget_usd_month", &self.budget_usd_month),
        ] {
            if let Some(v) = v {
                out.push(format!("{indent}  {k}: {}", q(v)));
            }
        }
        if self.admin {
            out.push(format!("{indent}  admin: true"));
        }
        out
    }
}

/// Where the top-level `keys:` section is: its line, the lines of its
/// block (exclusive end) and the indentation of its entries.
struct Section {
    line: usize,
    end: usize,
    indent: String,
}

fn is_top_level_key(l: &str) -> bool {
    l.chars()
        .next()
        .is_some_and(|c| !c.is_whitespace() && c != '#')
}

fn find_section(lines: &[&str]) -> Option<Section> {
    let line = lines.iter().position(|l| {
        l.strip_prefix("keys:").is_some_and(|rest| {
            rest.trim().is_empty() || rest.trim().starts_with('#') || rest.trim() == "{}"
        })
    })?;
    let mut end = line + 1;
    let mut last_content = line + 1;
    while end < lines.len() && !is_top_level_key(lines[end]) {
        if !lines[end].trim().is_empty() && !lines[end].trim_start().starts_with('#') {
            last_content = end + 1;
        }
        end += 1;
    }
    let indent = lines[line + 1..last_content]
        .iter()
        .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|l| l[..l.len() - l.trim_start().len()].to_string())
        .unwrap_or_else(|| "  ".into());
    Some(Section {
        line,
        end: last_content,
        indent,
    })
}

/// The file with `entry` added to its `keys:` section (created at the end
/// when there is none).
pub fn add(text: &str, entry: &Entry) -> Result<String, String> {
    let policy = Policy::from_yaml(text)?;
    if policy.keys.contains_key(&entry.name) {
        return Err(format!(
            "a key named `{}` exists; revoke it first or choose another name",
            entry.name
        ));
    }
    let lines: Vec<&str> = text.lines().collect();
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    match find_section(&lines) {
        Some(s) => {
            if lines[s.line].trim_start_matches("keys:").trim() == "{}" {
                out[s.line] = "keys:".into();
            }
            let at = s.end.max(s.line + 1);
            for (i, l) in entry.lines(&s.indent).into_iter().enumerate() {
                out.insert(at + i, l);
            }
        }
        None => {
            if out.last().is_some_and(|l| !l.trim().is_empty()) {
                out.push(String::new());
            }
            out.push("# Virtual keys (salted SHA-256 hashes; `slmgate keys add | revoke`).".into());
            out.push("keys:".into());
            out.extend(entry.lines("  "));
        }
    }
    finish(out)
}

/// The file without the key named `name`.
pub fn revoke(text: &str, name: &str) -> Result<String, String> {
    let policy = Policy::from_yaml(text)?;
    if !policy.keys.contains_key(name) {
        return Err(format!("no key named `{name}` in the policy"));
    }
    let lines: Vec<&str> = text.lines().collect();
    let s = find_section(&lines).ok_or("the policy's keys are not in a `keys:` block")?;
    let head = format!("{}{name}:", s.indent);
    let start = (s.line + 1..s.end)
        .find(|&i| lines[i] == head || lines[i].starts_with(&format!("{head} ")))
        .ok_or_else(|| format!("key `{name}` is not written as a block entry under `keys:`"))?;
    let deeper = |l: &str| l.trim().is_empty() || l.len() - l.trim_start().len() > s.indent.len();
    let mut stop = start + 1;
    while stop < s.end && deeper(lines[stop]) {
        stop += 1;
    }
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    out.drain(start..stop);
    let still = (s.line + 1..s.end - (stop - start))
        .any(|i| !out[i].trim().is_empty() && !out[i].trim_start().starts_with('#'));
    if !still {
        out[s.line] = "keys: {}".into();
    }
    finish(out)
}

fn finish(lines: Vec<String>) -> Result<String, String> {
    let text = lines.join("\n") + "\n";
    Policy::from_yaml(&text).map_err(|e| format!("the edited policy does not validate: {e}"))?;
    Ok(text)
}

/// Replace `path` with `text` atomically (a file beside it, renamed).
pub fn write(path: &Path, text: &str) -> Result<(), String> {
    let tmp = path.with_extension(format!("tmp-{:08x}", rand::random::<u32>()));
    std::fs::write(&tmp, text).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot replace {}: {e}", path.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "# my policy\nversion: 1\nbackends:\n  c: { kind: openai, api_key_env: K, base_url: 'http://x', models: { m: { input_per_mtok: 1, output_per_mtok: 1 } } }  # cloud\n# routes below\nroutes:\n  auto: { tiers: [ { name: all, target: c/m } ] }\n";

    fn entry(name: &str) -> Entry {
        let k = super::super::generate();
        Entry {
            name: name.into(),
            id: k.id,
            hash: k.hash,
            rpm: Some(60),
            budget_usd_day: Some("1.5".into()),
            models: Some(vec!["auto".into()]),
            ..Entry::default()
        }
    }

    #[test]
    fn adding_and_revoking_keeps_the_rest_of_the_file() {
        let one = add(BASE, &entry("alpha")).unwrap();
        assert!(one.starts_with(BASE), "{one}");
        let two = add(&one, &entry("beta")).unwrap();
        let p = Policy::from_yaml(&two).unwrap();
        assert_eq!(p.keys.len(), 2);
        assert_eq!(p.keys["alpha"].rpm, Some(60));
        assert!(add(&two, &entry("beta")).is_err(), "names are unique");
        let back = revoke(&two, "alpha").unwrap();
        let p = Policy::from_yaml(&back).unwrap();
        assert!(p.keys.contains_key("beta") && !p.keys.contains_key("alpha"));
        let empty = revoke(&back, "beta").unwrap();
        assert!(Policy::from_yaml(&empty).unwrap().keys.is_empty());
        assert!(
            empty.contains("# my policy")
                && empty.contains("# cloud")
                && empty.contains("# routes below")
        );
        assert!(revoke(&empty, "beta").is_err());
        let again = add(&empty, &entry("gamma")).unwrap();
        assert_eq!(Policy::from_yaml(&again).unwrap().keys.len(), 1);
    }

    #[test]
    fn keys_go_into_an_existing_section_wherever_it_is() {
        let text = BASE.replace(
            "# routes below\n",
            "keys:\n    # none yet\n# routes below\n",
        );
        let text = text.replace("keys:\n    # none yet\n", "keys: {}\n");
        let out = add(&text, &entry("alpha")).unwrap();
        let keys_at = out.find("keys:").unwrap();
        assert!(keys_at < out.find("routes:").unwrap(), "{out}");
        assert_eq!(Policy::from_yaml(&out).unwrap().keys.len(), 1);
    }
}
