//! API tokens: scoped, stored as a hash of their secret, revocable.
//!
//! A token reads `scp_<id>_<secret>`: `id` (12 hex digits) names the row,
//! `secret` is 32 random bytes in hex. Only SHA-256 of the secret is
//! stored: with 256 random bits a fast hash is enough (there is nothing to
//! brute-force), and the comparison is constant-time.

use std::fmt;
use std::str::FromStr;

use rusqlite::{params, OptionalExtension};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::Error;
use crate::store::Store;

/// What a token may do. `admin` implies every other scope.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Read the machine and the library: observe, search, show, reports.
    Observe,
    /// Add candidate policies, record results, submit verification.
    Propose,
    /// Attach and roll back schedulers (the deploy service).
    Deploy,
    /// Everything, including token management.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Observe, Scope::Propose, Scope::Deploy, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Observe => "observe",
            Scope::Propose => "propose",
            Scope::Deploy => "deploy",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Scope::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| format!("unknown scope '{s}' (scopes: observe, propose, deploy, admin)"))
    }
}

/// A token as listed (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    pub scopes: Vec<Scope>,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
}

impl TokenInfo {
    pub fn allows(&self, s: Scope) -> bool {
        self.scopes.contains(&s) || self.scopes.contains(&Scope::Admin)
    }
}

/// Why a presented token is not accepted (said to the caller as is).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no API token: send `Authorization: Bearer scp_...` (create one with `schedcp token create`)")]
    Missing,
    #[error(
        "malformed API token: expected scp_<id>_<secret> as printed by `schedcp token create`"
    )]
    Malformed,
    #[error("unknown or wrong API token")]
    Unknown,
    #[error("API token {0} was revoked")]
    Revoked(String),
    #[error("API token {0} expired at {1}")]
    Expired(String, String),
}

const PREFIX: &str = "scp_";

fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn parse_scopes(s: &str) -> Vec<Scope> {
    s.split(',').filter_map(|x| x.parse().ok()).collect()
}

fn check_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::Input(format!(
            "token name '{name}' must be 1..=64 characters of letters, digits, - _ . @"
        )))
    }
}

/// Create a token; returns its info and the full token (shown once).
pub fn create(
    store: &mut Store,
    name: &str,
    scopes: &[Scope],
    ttl: Option<std::time::Duration>,
) -> Result<(TokenInfo, String), Error> {
    check_name(name)?;
    if scopes.is_empty() {
        return Err(Error::Input(
            "give at least one scope: observe, propose, deploy, admin".into(),
        ));
    }
    let mut raw = [0u8; 6 + 32];
    getrandom::fill(&mut raw).map_err(|e| Error::Internal(anyhow::anyhow!("random: {e}")))?;
    let id = hex::encode(&raw[..6]);
    let secret = hex::encode(&raw[6..]);
    let mut scopes = scopes.to_vec();
    scopes.sort();
    scopes.dedup();
    let now = chrono::Utc::now();
    let info = TokenInfo {
        id: id.clone(),
        name: name.to_string(),
        scopes: scopes.clone(),
        created_at: stamp(now),
        expires_at: ttl.map(|t| stamp(now + chrono::Duration::seconds(t.as_secs() as i64))),
        revoked_at: None,
    };
    let joined = scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(",");
    store.write(|tx| {
        tx.execute(
            "INSERT INTO api_tokens (id, name, scopes, secret_hash, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                id,
                name,
                joined,
                hash(&secret),
                info.created_at,
                info.expires_at
            ],
        )
        .map_err(|e| Error::Internal(anyhow::anyhow!("storing the token: {e}")))
    })?;
    Ok((info, format!("{PREFIX}{id}_{secret}")))
}

pub fn list(store: &Store) -> Result<Vec<TokenInfo>, Error> {
    let c = store.conn();
    let read = || -> rusqlite::Result<Vec<TokenInfo>> {
        c.prepare(
            "SELECT id, name, scopes, created_at, expires_at, revoked_at FROM api_tokens
             ORDER BY created_at, id",
        )?
        .query_map([], |r| {
            Ok(TokenInfo {
                id: r.get(0)?,
                name: r.get(1)?,
                scopes: parse_scopes(&r.get::<_, String>(2)?),
                created_at: r.get(3)?,
                expires_at: r.get(4)?,
                revoked_at: r.get(5)?,
            })
        })?
        .collect()
    };
    read().map_err(|e| Error::Internal(anyhow::anyhow!("reading tokens: {e}")))
}

/// Revoke by id (or by the full token); revoking twice is an error that says so.
pub fn revoke(store: &mut Store, id_or_token: &str) -> Result<TokenInfo, Error> {
    let id = match id_or_token.strip_prefix(PREFIX) {
        Some(rest) => rest.split('_').next().unwrap_or_default().to_string(),
        None => id_or_token.to_string(),
    };
    let info = list(store)?
        .into_iter()
        .find(|t| t.id == id)
        .ok_or_else(|| {
            Error::Input(format!(
                "no API token with id '{id}' (see `schedcp token list`)"
            ))
        })?;
    if info.revoked_at.is_some() {
        return Err(Error::Input(format!("API token {id} is already revoked")));
    }
    let at = stamp(chrono::Utc::now());
    store.write(|tx| {
        tx.execute(
            "UPDATE api_tokens SET revoked_at = ?1 WHERE id = ?2",
            params![at, id],
        )
        .map_err(|e| Error::Internal(anyhow::anyhow!("revoking the token: {e}")))
    })?;
    Ok(TokenInfo {
        revoked_at: Some(at),
        ..info
    })
}

/// name, scopes, secret hash, created, expires, revoked.
type TokenRow = (
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
);

/// Check a presented token (`None`: none was sent).
pub fn authenticate(store: &Store, presented: Option<&str>) -> Result<TokenInfo, AuthError> {
    let token = presented.ok_or(AuthError::Missing)?.trim();
    let rest = token.strip_prefix(PREFIX).ok_or(AuthError::Malformed)?;
    let (id, secret) = rest.split_once('_').ok_or(AuthError::Malformed)?;
    if id.len() != 12 || !id.bytes().all(|b| b.is_ascii_hexdigit()) || secret.len() != 64 {
        return Err(AuthError::Malformed);
    }
    let row: Option<TokenRow> = store
        .conn()
        .query_row(
            "SELECT name, scopes, secret_hash, created_at, expires_at, revoked_at
             FROM api_tokens WHERE id = ?1",
            [id],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            },
        )
        .optional()
        .map_err(|_| AuthError::Unknown)?;
    let Some((name, scopes, stored, created_at, expires_at, revoked_at)) = row else {
        return Err(AuthError::Unknown);
    };
    if !bool::from(hash(secret).as_bytes().ct_eq(stored.as_bytes())) {
        return Err(AuthError::Unknown);
    }
    if revoked_at.is_some() {
        return Err(AuthError::Revoked(id.to_string()));
    }
    if let Some(exp) = &expires_at {
        if exp.as_str() <= stamp(chrono::Utc::now()).as_str() {
            return Err(AuthError::Expired(id.to_string(), exp.clone()));
        }
    }
    Ok(TokenInfo {
        id: id.to_string(),
        name,
        scopes: parse_scopes(&scopes),
        created_at,
        expires_at,
        revoked_at,
    })
}

fn stamp(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_authenticate_until_revoked_and_only_with_their_secret() {
        let mut store = Store::open_in_memory().unwrap();
        let (info, token) = create(&mut store, "agent-1", &[Scope::Observe], None).unwrap();
        assert!(
            token.starts_with("scp_") && token.len() == 4 + 12 + 1 + 64,
            "{token}"
        );
        let got = authenticate(&store, Some(&token)).unwrap();
        assert_eq!(got.id, info.id);
        assert!(got.allows(Scope::Observe) && !got.allows(Scope::Propose));
        let mut wrong = token.clone();
        let last = wrong.pop().unwrap();
        wrong.push(if last == 'A' { 'B' } else { 'A' });
        assert_eq!(authenticate(&store, Some(&wrong)), Err(AuthError::Unknown));
        assert_eq!(authenticate(&store, None), Err(AuthError::Missing));
        assert_eq!(
            authenticate(&store, Some("Bearer x")),
            Err(AuthError::Malformed)
        );
        revoke(&mut store, &info.id).unwrap();
        assert_eq!(
            authenticate(&store, Some(&token)),
            Err(AuthError::Revoked(info.id.clone()))
        );
        assert!(revoke(&mut store, &token)
            .unwrap_err()
            .to_string()
            .contains("already revoked"));
        // No secret is stored.
        let stored: String = store
            .conn()
            .query_row("SELECT secret_hash FROM api_tokens", [], |r| r.get(0))
            .unwrap();
        assert!(!token.contains(&stored));
    }

    #[test]
    fn admin_implies_every_scope_and_bad_input_is_refused() {
        let mut store = Store::open_in_memory().unwrap();
        let (info, _) = create(&mut store, "root", &[Scope::Admin], None).unwrap();
        assert!(Scope::ALL.iter().all(|s| info.allows(*s)));
        assert!(create(&mut store, "x", &[], None).is_err());
        assert!(create(&mut store, "a b", &[Scope::Observe], None).is_err());
        assert_eq!("observe".parse::<Scope>(), Ok(Scope::Observe));
        assert!("root"
            .parse::<Scope>()
            .unwrap_err()
            .contains("unknown scope"));
    }
}
