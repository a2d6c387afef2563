//! `schedcp audit ...`: the hash-chained log of every API call.

use clap::Subcommand;
use schedcp::api::audit;
use schedcp::config::Config;
use schedcp::error::{exit, Error};
use schedcp::store::Store;

use super::output;

#[derive(Debug, Subcommand)]
#[command(after_help = "\
Each entry holds the token id, door (mcp-http, mcp-socket, rest), peer, tool or
endpoint, a SHA-256 of the arguments, the outcome and the duration, chained by
hash to the one before; the store keeps the head, so an edited, inserted or
deleted entry, or a cut-off end, is detected.
Exit codes of verify: 0 intact, 1 tampered (each problem is printed).")]
pub enum AuditCommand {
    /// Check every entry, the chain and the end of the log.
    Verify {
        #[arg(long)]
        json: bool,
    },
    /// The last entries.
    Tail {
        #[arg(short, long, default_value_t = 20)]
        n: usize,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cfg: Config, c: AuditCommand) -> Result<i32, Error> {
    let path = audit::path(&cfg.state_dir());
    match c {
        AuditCommand::Verify { json } => {
            let store = Store::open_in(&cfg.state_dir())?;
            let v = audit::verify(&path, Some(&store))?;
            if json {
                output::json(&v)?;
            } else if v.ok {
                println!(
                    "audit log intact: {} entries ({})",
                    v.entries,
                    path.display()
                );
            } else {
                println!("audit log TAMPERED ({}):", path.display());
                for p in &v.problems {
                    println!("  {p}");
                }
            }
            Ok(if v.ok { exit::OK } else { exit::FAILURE })
        }
        AuditCommand::Tail { n, json } => {
            let entries = audit::tail(&path, n.clamp(1, 100_000))?;
            if json {
                output::json(&entries)?;
            } else {
                for e in &entries {
                    println!(
                        "{:>6} {} {:<10} {:<12} {:<22} {:<14} {:>9.1} ms  {}",
                        e.seq, e.at, e.door, e.token, e.call, e.outcome, e.duration_ms, e.peer
                    );
                }
            }
            Ok(exit::OK)
        }
    }
}
