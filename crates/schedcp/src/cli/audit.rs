//! `schedcp audit ...`: the hash-chained log of every API call.

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::Subcommand;
use schedcp::api::audit;
use schedcp::config::Config;
use schedcp::error::{exit, Error};
use schedcp::store::Store;
use schedcp::verify::token::Keys;
use serde::Serialize;

use super::output::{Output, Report};

#[derive(Debug, Subcommand)]
#[command(after_help = "\
Each entry holds the token id, door (mcp-http, mcp-socket, rest), peer, tool or
endpoint, a SHA-256 of the arguments, the outcome and the duration, chained by
hash to the one before, across sealed segments (audit.d/); the store keeps the
head, so an edited, inserted or deleted entry or segment, or a cut-off end, is
detected. Notes (not tampering): repairs after a crash or a full disk, with
where the cut-short bytes went; actions that began and have no end recorded.
Exit codes of verify: 0 intact, 1 tampered (each problem is printed).")]
pub enum AuditCommand {
    /// Check every entry, the chain and the end of the log.
    Verify,
    /// The last entries.
    Tail {
        #[arg(short, long, default_value_t = 20)]
        n: usize,
    },
}

pub fn run(cfg: Config, c: AuditCommand, out: Output) -> Result<i32, Error> {
    let path = audit::path(&cfg.state_dir());
    match c {
        AuditCommand::Verify => {
            let store = Store::open_in(&cfg.state_dir())?;
            // The daemon signs checkpoints with its token key.
            let key = Keys::load_or_create(&cfg.state_dir())?.trusted();
            let verification = audit::verify(&path, Some(&store), Some(&key))?;
            let ok = verification.ok;
            out.emit(&Checked { verification, path })?;
            Ok(if ok { exit::OK } else { exit::FAILURE })
        }
        AuditCommand::Tail { n } => {
            out.emit(&Tail(audit::tail(&path, n.clamp(1, 100_000))?))?;
            Ok(exit::OK)
        }
    }
}

/// `audit verify`: the check of the log at `path`.
#[derive(Serialize)]
#[serde(transparent)]
struct Checked {
    verification: audit::Verification,
    #[serde(skip)]
    path: PathBuf,
}

impl Report for Checked {
    fn render(&self) -> String {
        let v = &self.verification;
        let mut s = if v.ok {
            format!(
                "audit log intact: {} entries in {} segment(s) ({})\n",
                v.entries,
                v.segments,
                self.path.display()
            )
        } else {
            let mut s = format!("audit log TAMPERED ({}):\n", self.path.display());
            for p in &v.problems {
                let _ = writeln!(s, "  {p}");
            }
            s
        };
        let _ = writeln!(
            s,
            "  {} signed checkpoint(s) verified; {} entries after the last one",
            v.checkpoints, v.unsigned_tail
        );
        for n in &v.notes {
            let _ = writeln!(s, "  note: {n}");
        }
        for a in &v.open_actions {
            let _ = writeln!(s, "  began, no end recorded: {a}");
        }
        s
    }
}

/// `audit tail`: the last entries, oldest first.
#[derive(Serialize)]
#[serde(transparent)]
struct Tail(Vec<audit::Entry>);

impl Report for Tail {
    fn render(&self) -> String {
        let mut s = String::new();
        for e in &self.0 {
            let _ = writeln!(
                s,
                "{:>6} {} {:<10} {:<12} {:<22} {:<14} {:>9.1} ms  {}",
                e.seq, e.at, e.door, e.token, e.call, e.outcome, e.duration_ms, e.peer
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_serializes_the_verification_and_renders_with_the_path() {
        let checked = |ok, problems: Vec<String>| Checked {
            verification: audit::Verification {
                entries: 3,
                ok,
                problems,
                segments: 1,
                ..Default::default()
            },
            path: PathBuf::from("/var/lib/schedcp/audit.log"),
        };
        let good = checked(true, Vec::new());
        assert_eq!(
            serde_json::to_value(&good).unwrap(),
            serde_json::json!({ "entries": 3, "ok": true, "problems": [], "segments": 1, "notes": [],
                                "open_actions": [], "checkpoints": 0, "unsigned_tail": 0 })
        );
        assert_eq!(
            good.render(),
            "audit log intact: 3 entries in 1 segment(s) (/var/lib/schedcp/audit.log)\n  \
             0 signed checkpoint(s) verified; 0 entries after the last one\n"
        );
        let bad = checked(false, vec!["entry 2: hash mismatch".into()]);
        assert_eq!(
            bad.render(),
            "audit log TAMPERED (/var/lib/schedcp/audit.log):\n  entry 2: hash mismatch\n  \
             0 signed checkpoint(s) verified; 0 entries after the last one\n"
        );
    }
}
