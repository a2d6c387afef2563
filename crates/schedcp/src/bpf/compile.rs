//! clang `-target bpf` against the bundled headers, with clang's diagnostics
//! returned as structured data rather than a wall of text.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::process::run_with_timeout;

/// Largest scheduler source schedcp compiles.
pub const MAX_SOURCE_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, Serialize)]
pub struct CompiledObject {
    pub path: PathBuf,
    pub sha256: String,
    pub size_bytes: u64,
    pub compile_ms: f64,
}

/// One clang diagnostic, e.g. `main.bpf.c:12:5: error: use of undeclared identifier 'x'`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Diagnostic {
    pub file: String,
    pub line: u32,
    pub column: u32,
    pub severity: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file, self.line, self.column, self.severity, self.message
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("{name} does not compile:\n{}", render(.diagnostics, .raw))]
    Diagnostics {
        name: String,
        diagnostics: Vec<Diagnostic>,
        raw: String,
    },
    #[error("compiling {name} took longer than {secs} s; clang was killed")]
    Timeout { name: String, secs: u64 },
    #[error("the scheduler source is {size} bytes; the limit is {MAX_SOURCE_BYTES}")]
    TooLarge { size: usize },
    #[error(transparent)]
    Tool(#[from] anyhow::Error),
}

fn render(diags: &[Diagnostic], raw: &str) -> String {
    let errors: Vec<String> = diags
        .iter()
        .filter(|d| d.severity == "error")
        .map(|d| format!("  {d}"))
        .collect();
    if errors.is_empty() {
        raw.lines()
            .take(20)
            .map(|l| format!("  {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    } else {
        errors.join("\n")
    }
}

pub struct Compiler {
    pub clang: String,
    pub include_dir: PathBuf,
    pub timeout: Duration,
}

impl Compiler {
    /// Compile `source` (named `name` in diagnostics) into `workdir/<name>.o`.
    /// The source is copied into `workdir` and compiled there, so a relative
    /// `#include "..."` cannot reach files next to the original.
    pub fn compile(
        &self,
        name: &str,
        source: &str,
        workdir: &Path,
    ) -> Result<CompiledObject, CompileError> {
        if source.len() > MAX_SOURCE_BYTES {
            return Err(CompileError::TooLarge { size: source.len() });
        }
        let src = workdir.join(name);
        let obj = workdir.join(format!("{name}.o"));
        std::fs::write(&src, source).with_context(|| format!("writing {}", src.display()))?;
        let mut cmd = Command::new(&self.clang);
        cmd.current_dir(workdir)
            .args([
                "-g",
                "-O2",
                "-Wall",
                "-Wno-unused-function",
                "-target",
                "bpf",
                "-mcpu=v3",
            ])
            .args([
                "-D__TARGET_ARCH_x86",
                "-D__SCX_TARGET_ARCH_x86",
                "-fno-color-diagnostics",
            ])
            .args(crate::bpf::include::include_flags(&self.include_dir))
            .args(["-c", name, "-o"])
            .arg(&obj);
        let done = run_with_timeout(&mut cmd, self.timeout, 256 << 10).with_context(|| {
            format!(
                "running {} (install clang-19: scripts/setup.sh)",
                self.clang
            )
        })?;
        if done.timed_out() {
            return Err(CompileError::Timeout {
                name: name.into(),
                secs: self.timeout.as_secs(),
            });
        }
        if !done.success() {
            return Err(CompileError::Diagnostics {
                name: name.into(),
                diagnostics: parse_diagnostics(&done.stderr),
                raw: done.stderr,
            });
        }
        let bytes = std::fs::read(&obj).with_context(|| format!("reading {}", obj.display()))?;
        Ok(CompiledObject {
            path: obj,
            sha256: hex::encode(Sha256::digest(&bytes)),
            size_bytes: bytes.len() as u64,
            compile_ms: done.elapsed.as_secs_f64() * 1e3,
        })
    }
}

/// Parse clang's `file:line:col: severity: message` lines.
pub fn parse_diagnostics(stderr: &str) -> Vec<Diagnostic> {
    stderr
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(5, ':');
            let file = parts.next()?.trim().to_string();
            let line = parts.next()?.trim().parse().ok()?;
            let column = parts.next()?.trim().parse().ok()?;
            let severity = parts.next()?.trim().to_string();
            if !matches!(
                severity.as_str(),
                "error" | "warning" | "note" | "fatal error"
            ) {
                return None;
            }
            let message = parts.next()?.trim().to_string();
            Some(Diagnostic {
                file,
                line,
                column,
                severity,
                message,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_clang_lines() {
        let s = "x.bpf.c:7:3: error: use of undeclared identifier 'foo'\n    7 |   foo();\n      |   ^\n\
                 x.bpf.c:9:1: warning: unused variable 'y' [-Wunused-variable]\n1 error generated.\n";
        let d = parse_diagnostics(s);
        assert_eq!(d.len(), 2);
        assert_eq!(
            (d[0].line, d[0].column, d[0].severity.as_str()),
            (7, 3, "error")
        );
        assert!(d[0].message.contains("undeclared identifier"));
    }
}
