use clap::Subcommand;
use schedcp::error::{exit, Error};
use schedcp::policies::builtin;

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// List the policies in the library.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one policy: metadata, tunables and (with --source) its BPF C source.
    Show {
        name: String,
        #[arg(long)]
        source: bool,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: PolicyCommand) -> Result<i32, Error> {
    match cmd {
        PolicyCommand::List { json } => {
            let all = builtin::all().map_err(Error::Internal)?;
            if json {
                let metas: Vec<_> = all.iter().map(|p| &p.meta).collect();
                super::output::json(&metas)?;
            } else {
                for p in &all {
                    println!("{:<10} {}", p.meta.name, p.meta.description);
                }
            }
        }
        PolicyCommand::Show { name, source, json } => {
            let p = builtin::get(&name).map_err(|e| Error::Input(format!("{e:#}")))?;
            if json {
                let mut v = serde_json::to_value(&p.meta).map_err(|e| Error::Internal(e.into()))?;
                if source {
                    v["source"] = p.source.into();
                }
                super::output::json(&v)?;
            } else {
                let m = &p.meta;
                println!(
                    "{} (ops {})\n\n{}\n\nalgorithm: {}\ntargets: {}",
                    m.name,
                    m.ops_name,
                    m.description,
                    m.algorithm,
                    m.target_workloads.join(", ")
                );
                for l in &m.limitations {
                    println!("limitation: {l}");
                }
                for t in &m.tunables {
                    let range = match (t.min, t.max) {
                        (Some(a), Some(b)) => format!(" [{a}..={b}]"),
                        _ => String::new(),
                    };
                    println!(
                        "tunable {} ({:?}, default {}{range}): {}",
                        t.name, t.kind, t.default, t.doc
                    );
                }
                if source {
                    println!("\n{}", p.source);
                }
            }
        }
    }
    Ok(exit::OK)
}
