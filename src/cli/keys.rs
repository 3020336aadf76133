//! `slmgate keys add | revoke`.

use crate::keys::edit::{self, Entry};
use std::path::Path;

/// Add the key to the policy file; returns its plaintext (shown once).
pub fn add(policy: &Path, mut entry: Entry) -> Result<String, String> {
    let text = std::fs::read_to_string(policy)
        .map_err(|e| format!("cannot read {}: {e}", policy.display()))?;
    let key = crate::keys::generate();
    entry.id = key.id;
    entry.hash = key.hash;
    let name = entry.name.clone();
    edit::write(policy, &edit::add(&text, &entry)?)?;
    eprintln!(
        "added key `{name}` to {} (its salted hash only); the key, shown this once:",
        policy.display()
    );
    Ok(key.plaintext)
}

pub fn revoke(policy: &Path, name: &str) -> Result<(), String> {
    let text = std::fs::read_to_string(policy)
        .map_err(|e| format!("cannot read {}: {e}", policy.display()))?;
    edit::write(policy, &edit::revoke(&text, name)?)?;
    eprintln!("revoked key `{name}` in {}", policy.display());
    Ok(())
}
