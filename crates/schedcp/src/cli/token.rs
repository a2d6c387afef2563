//! `schedcp token ...`: API tokens for agents (root only).

use std::fmt::Write as _;

use clap::Subcommand;
use schedcp::api::auth::{self, Scope, TokenInfo};
use schedcp::config::Config;
use schedcp::error::{exit, Error};
use schedcp::store::Store;
use serde::Serialize;

use super::output::{Output, Report};

#[derive(Debug, Subcommand)]
#[command(after_help = "\
Scopes: observe (read the machine and the library), propose (add candidate
policies, record results, submit verification), deploy (attach and roll back
schedulers), admin (everything). Only a hash of each token is stored: the
token is printed once, at creation.

Examples:
  schedcp token create --name claude --scopes observe,propose
  schedcp token list --json
  schedcp token revoke 3f9a0c1b2d4e")]
pub enum TokenCommand {
    /// Create a token and print it (once).
    Create {
        /// A label for the audit log, e.g. the agent's name.
        #[arg(long)]
        name: String,
        /// Comma-separated: observe, propose, deploy, admin.
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        /// Expire after this many hours (default: never).
        #[arg(long)]
        ttl_hours: Option<u64>,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by id (or the full token); the daemon refuses it at once.
    Revoke { id: String },
}

pub fn run(cfg: Config, c: TokenCommand, out: Output) -> Result<i32, Error> {
    if !nix::unistd::geteuid().is_root() && std::env::var_os("SCHEDCP_STATE").is_none() {
        return Err(Error::Input(
            "token management is for root (tokens grant access to the daemon)".into(),
        ));
    }
    let mut store = Store::open_in(&cfg.state_dir())?;
    match c {
        TokenCommand::Create {
            name,
            scopes,
            ttl_hours,
        } => {
            let scopes = scopes
                .iter()
                .map(|s| s.trim().parse::<Scope>().map_err(Error::Input))
                .collect::<Result<Vec<_>, _>>()?;
            if ttl_hours == Some(0) {
                return Err(Error::Input("--ttl-hours must be at least 1".into()));
            }
            let ttl = ttl_hours.map(|h| std::time::Duration::from_secs(h.saturating_mul(3600)));
            let (info, token) = auth::create(&mut store, &name, &scopes, ttl)?;
            out.emit(&Created { info, token })?;
        }
        TokenCommand::List => out.emit(&Listed(auth::list(&store)?))?,
        TokenCommand::Revoke { id } => out.emit(&Revoked(auth::revoke(&mut store, &id)?))?,
    }
    Ok(exit::OK)
}

fn scopes(t: &TokenInfo) -> String {
    t.scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// `token create`: the secret (on stdout alone, for `$(...)`) and what it is.
#[derive(Serialize)]
struct Created {
    info: TokenInfo,
    token: String,
}

impl Report for Created {
    fn render(&self) -> String {
        format!("{}\n", self.token)
    }

    fn notice(&self) -> Option<String> {
        Some(format!(
            "token {} ({}) with scopes {}: shown once, store it now",
            self.info.id,
            self.info.name,
            scopes(&self.info)
        ))
    }
}

/// `token list`.
#[derive(Serialize)]
#[serde(transparent)]
struct Listed(Vec<TokenInfo>);

impl Report for Listed {
    fn render(&self) -> String {
        let mut s = String::new();
        for t in &self.0 {
            let status = match (&t.revoked_at, &t.expires_at) {
                (Some(r), _) => format!("revoked {r}"),
                (None, Some(e)) => format!("expires {e}"),
                (None, None) => "active".into(),
            };
            let _ = writeln!(s, "{}  {:<20} {:<28} {}", t.id, t.name, scopes(t), status);
        }
        s
    }
}

/// `token revoke`: the token as it now is.
#[derive(Serialize)]
#[serde(transparent)]
struct Revoked(TokenInfo);

impl Report for Revoked {
    fn render(&self) -> String {
        format!("revoked {} ({})\n", self.0.id, self.0.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> TokenInfo {
        TokenInfo {
            id: "3f9a0c1b2d4e".into(),
            name: "agent".into(),
            scopes: vec![Scope::Observe, Scope::Propose],
            created_at: "2026-01-01T00:00:00Z".into(),
            expires_at: None,
            revoked_at: None,
        }
    }

    #[test]
    fn create_prints_the_secret_alone_on_stdout_and_the_rest_as_a_notice() {
        let c = Created {
            info: info(),
            token: "scp_secret".into(),
        };
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            serde_json::json!({ "token": "scp_secret", "info": info() })
        );
        assert_eq!(c.render(), "scp_secret\n");
        assert_eq!(
            c.notice().unwrap(),
            "token 3f9a0c1b2d4e (agent) with scopes observe,propose: shown once, store it now"
        );
    }

    #[test]
    fn list_and_revoke_serialize_the_tokens_themselves() {
        let l = Listed(vec![info()]);
        assert_eq!(
            serde_json::to_value(&l).unwrap(),
            serde_json::to_value(vec![info()]).unwrap()
        );
        assert_eq!(
            l.render(),
            "3f9a0c1b2d4e  agent                observe,propose              active\n"
        );
        let r = Revoked(info());
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::to_value(info()).unwrap()
        );
        assert_eq!(r.render(), "revoked 3f9a0c1b2d4e (agent)\n");
    }
}
