//! The verify service as callers use it (the CLI, the daemon): resolve what
//! to verify, run the pipeline for each candidate (several at once with
//! `jobs`), keep each object by hash for deployment, and keep each report of
//! a repository version with that version.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::pipeline::{self, Options, Subject};
use super::report::VerifyReport;
use crate::bpf::compile::MAX_SOURCE_BYTES;
use crate::config::Config;
use crate::error::Error;
use crate::policies::model::{Body, NewVerifyReport, PolicyRef};
use crate::policies::{external, Library};

/// Resolve a target: a `.bpf.c` path (anything with `/` or ending in `.c`)
/// or `policy[@version]` from the repository.
pub fn subject(cfg: &Config, target: &str) -> Result<Subject, Error> {
    let looks_like_file = target.contains('/') || target.ends_with(".c");
    if looks_like_file {
        return file_subject(target);
    }
    let r: PolicyRef = target.parse().map_err(Error::Input)?;
    let lib = Library::open(cfg)?;
    let v = lib.get(&r)?;
    let label = v.id();
    match v.body {
        Body::Bpf { source } => Ok(Subject {
            policy: v.name,
            version: v.version,
            label,
            source,
            binary: None,
        }),
        Body::Knobs(k) => Err(Error::Input(format!(
            "{label} is a knob set ({}), not a scheduler: verify checks sched_ext schedulers. A knob set is checked by deploy's admission (catalogue ranges, this machine's knobs) and proven by trials: `schedcp tune --candidate {}` or `schedcp knob trial`",
            k.describe(),
            v.name
        ))),
        Body::External(spec) => {
            let installed = external::installed(cfg, &spec)?.ok_or_else(|| {
                Error::Setup(format!(
                    "{label} is an external scheduler ({} {}) and is not installed; install it with `schedcp policy install-external {}` (builds it with cargo, several minutes), then verify again",
                    spec.crate_name, spec.version, v.name
                ))
            })?;
            Ok(Subject {
                policy: v.name,
                version: v.version,
                label,
                source: serde_json::to_string(&spec).map_err(|e| Error::Internal(e.into()))?,
                binary: Some(installed),
            })
        }
    }
}

fn file_subject(target: &str) -> Result<Subject, Error> {
    let path = PathBuf::from(target);
    let meta = std::fs::metadata(&path)
        .map_err(|e| Error::Input(format!("cannot read {}: {e}", path.display())))?;
    if !meta.is_file() || meta.len() > MAX_SOURCE_BYTES as u64 {
        return Err(Error::Input(format!(
            "{} must be a regular file of at most {MAX_SOURCE_BYTES} bytes",
            path.display(),
        )));
    }
    let source = std::fs::read_to_string(&path)
        .map_err(|e| Error::Input(format!("cannot read {} as UTF-8: {e}", path.display())))?;
    let mut stem = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("scheduler")
        .trim_end_matches(".c")
        .trim_end_matches(".bpf");
    // schedulers/<name>/main.bpf.c: the directory names the policy.
    if stem == "main" {
        stem = path
            .parent()
            .and_then(|d| d.file_name())
            .and_then(|n| n.to_str())
            .unwrap_or(stem);
    }
    let policy: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    Ok(Subject {
        policy,
        version: 0,
        label: target.into(),
        source,
        binary: None,
    })
}

/// Verify every subject, `jobs` at a time; results in the subjects' order.
/// `progress(label, message)` is called from the worker threads.
pub fn verify_all(
    cfg: &Config,
    subjects: &[Subject],
    opts: &Options,
    jobs: usize,
    progress: &(dyn Fn(&str, &str) + Sync),
) -> Result<Vec<Result<VerifyReport, Error>>, Error> {
    opts.validate()?;
    let store = pipeline::object_store(cfg);
    std::fs::create_dir_all(&store)
        .map_err(|e| Error::Setup(format!("cannot create {}: {e}", store.display())))?;
    let queue = Mutex::new((0..subjects.len()).rev().collect::<Vec<_>>());
    // An API job's cancel reaches the workers' VMs and compiles.
    let cancel = crate::host::interrupt::job_flag();
    let mut all: Vec<(usize, Result<VerifyReport, Error>)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..jobs.clamp(1, subjects.len().max(1)))
            .map(|_| {
                let (queue, store, cancel) = (&queue, &store, cancel.clone());
                s.spawn(move || {
                    crate::host::interrupt::adopt(cancel);
                    let mut out = Vec::new();
                    while let Some(i) = queue.lock().expect("not poisoned").pop() {
                        out.push((i, verify_one(cfg, &subjects[i], opts, store, progress)));
                    }
                    out
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("verify worker"))
            .collect()
    });
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, r)| r).collect())
}

fn verify_one(
    cfg: &Config,
    sub: &Subject,
    opts: &Options,
    store: &Path,
    progress: &(dyn Fn(&str, &str) + Sync),
) -> Result<VerifyReport, Error> {
    let work = tempfile::tempdir().map_err(|e| Error::Internal(e.into()))?;
    let r = pipeline::verify(cfg, sub, opts, work.path(), &mut |m: &str| {
        progress(&sub.label, m)
    })?;
    keep(store, work.path(), &r)?;
    if sub.version > 0 {
        record(cfg, sub, &r)?;
    }
    Ok(r)
}

/// Keep the object and the report under the state dir, by object hash.
fn keep(store: &Path, work: &Path, r: &VerifyReport) -> Result<(), Error> {
    let Some(sha) = &r.object_sha256 else {
        return Ok(());
    };
    let io =
        |e: std::io::Error| Error::Internal(anyhow::anyhow!("keeping the verified object: {e}"));
    for entry in std::fs::read_dir(work).map_err(io)? {
        let p = entry.map_err(io)?.path();
        // Durable and whole: the gate trusts what is here by its name.
        let name = match p.extension().and_then(|e| e.to_str()) {
            Some("o") => format!("{sha}.bpf.o"),
            Some("bin") => format!("{sha}.bin"),
            _ => continue,
        };
        let bytes = std::fs::read(&p).map_err(io)?;
        crate::host::fs::atomic_write(&store.join(name), &bytes, None).map_err(io)?;
    }
    let json = serde_json::to_vec_pretty(r).map_err(|e| Error::Internal(e.into()))?;
    crate::host::fs::atomic_write(&store.join(format!("{sha}.report.json")), &json, None)
        .map_err(io)
}

/// Keep the report with its repository version (passing moves a candidate
/// to `verified`).
fn record(cfg: &Config, sub: &Subject, r: &VerifyReport) -> Result<(), Error> {
    let mut lib = Library::open(cfg)?;
    let report = NewVerifyReport {
        passed: r.passed,
        report_sha256: r.digest(),
        object_sha256: r.object_sha256.clone(),
        kernel_release: r.kernel_release.clone(),
        report: serde_json::to_value(r).map_err(|e| Error::Internal(e.into()))?,
    };
    let pref = PolicyRef {
        name: sub.policy.clone(),
        version: Some(sub.version),
    };
    let (stored, moved) = lib.record_verify_report(&pref, &report)?;
    tracing::info!(
        "{}: verify report #{} kept ({})",
        sub.label,
        stored.id,
        if r.passed { "passed" } else { "failed" }
    );
    if let Some(v) = moved {
        tracing::info!("{} is now {}", v.id(), v.state.as_str());
    }
    Ok(())
}
