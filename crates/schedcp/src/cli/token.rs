//! `schedcp token ...`: API tokens for agents (root only).

use clap::Subcommand;
use schedcp::api::auth::{self, Scope};
use schedcp::config::Config;
use schedcp::error::{exit, Error};
use schedcp::store::Store;

use super::output;

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
        #[arg(long)]
        json: bool,
    },
    /// List tokens (never their secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id (or the full token); the daemon refuses it at once.
    Revoke {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cfg: Config, c: TokenCommand) -> Result<i32, Error> {
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
            json,
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
            if json {
                output::json(&serde_json::json!({ "token": token, "info": info }))?;
            } else {
                println!("{token}");
                eprintln!(
                    "token {} ({}) with scopes {}: shown once, store it now",
                    info.id,
                    info.name,
                    info.scopes
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                );
            }
        }
        TokenCommand::List { json } => {
            let all = auth::list(&store)?;
            if json {
                output::json(&all)?;
            } else {
                for t in &all {
                    let status = match (&t.revoked_at, &t.expires_at) {
                        (Some(r), _) => format!("revoked {r}"),
                        (None, Some(e)) => format!("expires {e}"),
                        (None, None) => "active".into(),
                    };
                    println!(
                        "{}  {:<20} {:<28} {}",
                        t.id,
                        t.name,
                        t.scopes
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(","),
                        status
                    );
                }
            }
        }
        TokenCommand::Revoke { id, json } => {
            let t = auth::revoke(&mut store, &id)?;
            if json {
                output::json(&t)?;
            } else {
                println!("revoked {} ({})", t.id, t.name);
            }
        }
    }
    Ok(exit::OK)
}
