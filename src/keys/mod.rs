//! Virtual keys: who a caller is.
//!
//! A key reads `sk-slm-<id>-<secret>`: `id` (8 hex digits) is public and
//! finds the key's entry in the policy; `secret` (48 hex digits, 192 random
//! bits) is never stored. The policy keeps `sha256:<salt>:<SHA-256(salt ‖
//! secret)>` with a random 16-byte salt per key. A plain salted SHA-256
//! rather than a slow password hash (bcrypt, Argon2): the secret is random
//! with 192 bits of entropy, so guessing it from the hash is hopeless
//! however fast the hash is, and a slow hash would cost every request
//! milliseconds; the salt keeps equal secrets from having equal hashes and
//! rules out precomputed tables.

pub mod edit;

use crate::config::{KeyConfig, Policy};
use crate::policy::Routing;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

pub const PREFIX: &str = "sk-slm-";

/// The caller of a request, once its key checked out (request and response
/// extension).
#[derive(Debug, Clone)]
pub struct Caller {
    /// The key's name: what metrics and logs say (never the key).
    pub name: Arc<str>,
    pub key: Arc<KeyConfig>,
    /// What the key may ask for, as `Routing` ids (None: anything).
    allowed: Option<Arc<HashSet<String>>>,
}

impl Caller {
    /// Whether this caller may name `model` (a route, model id, alias or
    /// `backend/model`).
    pub fn may_use(&self, routing: &Routing, model: &str) -> bool {
        let Some(allowed) = &self.allowed else {
            return true;
        };
        allowed.contains(model)
            || routing
                .resolve(model)
                .is_some_and(|r| allowed.iter().any(|a| routing.same(a, r)))
    }
}

struct Entry {
    caller: Caller,
    salt: Vec<u8>,
    digest: Vec<u8>,
}

/// The policy's keys, by id.
#[derive(Default)]
pub struct Keys {
    by_id: HashMap<String, Entry>,
}

impl Keys {
    pub fn new(policy: &Policy) -> Keys {
        let mut by_id = HashMap::new();
        for (name, k) in &policy.keys {
            let mut parts = k.hash.split(':').skip(1);
            let (Some(salt), Some(digest)) = (
                parts.next().and_then(from_hex),
                parts.next().and_then(from_hex),
            ) else {
                continue; // validate() refuses such a policy
            };
            let allowed = k
                .models
                .as_ref()
                .map(|m| Arc::new(m.iter().cloned().collect::<HashSet<_>>()));
            let caller = Caller {
                name: Arc::from(name.as_str()),
                key: Arc::new(k.clone()),
                allowed,
            };
            by_id.insert(
                k.id.to_ascii_lowercase(),
                Entry {
                    caller,
                    salt,
                    digest,
                },
            );
        }
        Keys { by_id }
    }

    /// No keys: the gateway is open.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// The caller a presented key belongs to, if it is one of ours.
    pub fn verify(&self, presented: &str) -> Option<&Caller> {
        let rest = presented.trim().strip_prefix(PREFIX)?;
        let (id, secret) = rest.split_once('-')?;
        let e = self.by_id.get(&id.to_ascii_lowercase())?;
        let got = salted(&e.salt, secret);
        // Constant time: how much of the digest matches says nothing.
        let same = got.len() == e.digest.len()
            && got
                .iter()
                .zip(&e.digest)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        same.then_some(&e.caller)
    }

    /// Every caller, by name.
    pub fn callers(&self) -> impl Iterator<Item = &Caller> {
        self.by_id.values().map(|e| &e.caller)
    }
}

fn salted(salt: &[u8], secret: &str) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(secret.as_bytes());
    h.finalize().to_vec()
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A new key: its plaintext (shown once), public id and stored hash.
pub struct NewKey {
    pub plaintext: String,
    pub id: String,
    pub hash: String,
}

pub fn generate() -> NewKey {
    let id = to_hex(&rand::random::<[u8; 4]>());
    let secret = to_hex(&rand::random::<[u8; 24]>());
    let salt = rand::random::<[u8; 16]>();
    NewKey {
        plaintext: format!("{PREFIX}{id}-{secret}"),
        hash: format!(
            "sha256:{}:{}",
            to_hex(&salt),
            to_hex(&salted(&salt, &secret))
        ),
        id,
    }
}

/// The key a request presents: `Authorization: Bearer <key>` (OpenAI SDKs)
/// or `x-api-key: <key>` (Anthropic SDKs).
pub fn presented(headers: &http::HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(v.trim());
    }
    let auth = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = auth.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy_with(k: &NewKey, models: &str) -> Policy {
        Policy::from_yaml(&format!(
            "version: 1\nbackends:\n  c: {{ kind: openai, api_key_env: K, base_url: 'http://x', models: {{ m: {{ input_per_mtok: 1, output_per_mtok: 1, aliases: [mm] }} }} }}\nroutes:\n  auto: {{ tiers: [ {{ name: all, target: c/m }} ] }}\nkeys:\n  team: {{ id: '{}', hash: '{}'{models} }}\n",
            k.id, k.hash
        ))
        .unwrap()
    }

    #[test]
    fn keys_verify_only_with_their_secret() {
        let k = generate();
        let keys = Keys::new(&policy_with(&k, ""));
        assert_eq!(&*keys.verify(&k.plaintext).unwrap().name, "team");
        let mut wrong = k.plaintext.clone();
        wrong.pop();
        wrong.push(if k.plaintext.ends_with('0') { '1' } else { '0' });
        assert!(keys.verify(&wrong).is_none());
        assert!(keys.verify("sk-slm-00000000-abc").is_none());
        assert!(keys.verify("").is_none());
        assert!(
            !k.hash.contains(&k.plaintext[PREFIX.len() + 9..]),
            "the secret is not stored"
        );
    }

    #[test]
    fn allowed_models_match_ids_and_aliases() {
        let k = generate();
        let p = policy_with(&k, ", models: [m]");
        let keys = Keys::new(&p);
        let routing = Routing::new(&p);
        let c = keys.verify(&k.plaintext).unwrap();
        assert!(c.may_use(&routing, "m"));
        assert!(c.may_use(&routing, "mm"), "an alias of an allowed model");
        assert!(c.may_use(&routing, "c/m"));
        assert!(!c.may_use(&routing, "auto"));
    }

    #[test]
    fn both_sdk_headers_carry_the_key() {
        let mut h = http::HeaderMap::new();
        h.insert("authorization", "Bearer sk-slm-x".parse().unwrap());
        assert_eq!(presented(&h), Some("sk-slm-x"));
        h.insert("x-api-key", "sk-slm-y".parse().unwrap());
        assert_eq!(presented(&h), Some("sk-slm-y"));
    }
}
