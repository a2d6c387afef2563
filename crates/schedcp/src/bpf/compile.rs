//! clang `-target bpf` against the bundled headers, with clang's diagnostics
//! returned as structured data rather than a wall of text.
//!
//! Scheduler sources may come from an agent and are treated as hostile:
//! every compile first passes the include check
//! ([`crate::bpf::includes`]: no file but the bundled headers may be
//! read), then runs clang in a [`Jail`] (its own file system view with
//! only `/usr`, a copy of the header bundle and the source; no network;
//! `nobody`; CPU, memory, file-size and wall-clock limits). The lab and the
//! verifier both compile through here.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, Context};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::bpf::includes::{self, Allowlist, Violation};
use crate::bpf::jail::{Ending, Jail, Limits};

/// Largest scheduler source schedcp compiles.
pub const MAX_SOURCE_BYTES: usize = 1 << 20;

/// Host system headers the bundle's own headers include (`scx/common.bpf.h`
/// includes `<asm-generic/errno.h>`), copied from `/usr/include`
/// (linux-libc-dev) into the sandbox because clang runs with `-nostdinc`.
pub const HOST_HEADERS: &[&str] = &["asm-generic/errno.h", "asm-generic/errno-base.h"];
const HOST_INCLUDE: &str = "/usr/include";

/// Where the header copies live in the sandbox's working directory.
const SANDBOX_INCLUDE: &str = "include";
const SANDBOX_HOST_INCLUDE: &str = "include-host";

#[derive(Debug, Clone, Serialize)]
pub struct CompiledObject {
    pub path: PathBuf,
    pub sha256: String,
    pub size_bytes: u64,
    /// The whole sandboxed compile: include check, sandbox set-up, clang,
    /// copying the object out.
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
    /// The include check refused the source; clang never ran.
    #[error(
        "{name} was refused before compiling: it uses preprocessor or assembler features \
         that could read files other than the bundled headers:\n{}",
        render_violations(.name, .violations)
    )]
    Refused {
        name: String,
        violations: Vec<Violation>,
    },
    #[error("compiling {name} took longer than {secs} s; clang was killed")]
    Timeout { name: String, secs: u64 },
    /// clang hit a CPU, memory or output-size limit of the sandbox.
    #[error("compiling {name} was stopped: clang {reason}")]
    Limit { name: String, reason: String },
    #[error("the scheduler source is {size} bytes; the limit is {MAX_SOURCE_BYTES}")]
    TooLarge { size: usize },
    #[error(transparent)]
    Tool(#[from] anyhow::Error),
}

fn render(diags: &[Diagnostic], raw: &str) -> String {
    let errors: Vec<String> = diags
        .iter()
        .filter(|d| d.severity == "error" || d.severity == "fatal error")
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

fn render_violations(name: &str, violations: &[Violation]) -> String {
    violations
        .iter()
        .map(|v| format!("  {name}:{v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

pub struct Compiler {
    pub clang: String,
    /// The unpacked header bundle ([`crate::bpf::include::include_dir`]).
    pub include_dir: PathBuf,
    /// The sandbox's limits for clang (`limits.wall` is the deadline).
    pub limits: Limits,
}

impl Compiler {
    /// A compiler with the default [`Limits`].
    pub fn new(clang: impl Into<String>, include_dir: PathBuf) -> Compiler {
        Compiler {
            clang: clang.into(),
            include_dir,
            limits: Limits::default(),
        }
    }

    pub fn with_limits(mut self, limits: Limits) -> Compiler {
        self.limits = limits;
        self
    }

    /// The header names a source may `#include`: the bundle's files
    /// relative to each of its include roots, and [`HOST_HEADERS`].
    pub fn allowlist(&self) -> anyhow::Result<Allowlist> {
        let roots: Vec<PathBuf> = include_roots(&self.include_dir);
        let bundled = Allowlist::from_roots(&roots)
            .with_context(|| format!("listing the header bundle {}", self.include_dir.display()))?;
        if bundled.is_empty() {
            return Err(anyhow!(
                "the header bundle {} is empty",
                self.include_dir.display()
            ));
        }
        Ok(Allowlist::new(
            bundled
                .iter()
                .map(str::to_string)
                .chain(HOST_HEADERS.iter().map(|h| h.to_string())),
        ))
    }

    /// Compile `source` (named `name` in diagnostics) into `workdir/<name>.o`.
    ///
    /// The source is checked ([`includes::check`]), then compiled by clang
    /// in a fresh [`Jail`] holding only a copy of it and of the header
    /// bundle; the object is copied out into `workdir` (with the source,
    /// for the record).
    pub fn compile(
        &self,
        name: &str,
        source: &str,
        workdir: &Path,
    ) -> Result<CompiledObject, CompileError> {
        let start = Instant::now();
        if source.len() > MAX_SOURCE_BYTES {
            return Err(CompileError::TooLarge { size: source.len() });
        }
        check_name(name)?;
        let violations = includes::check(source, &self.allowlist()?);
        if !violations.is_empty() {
            return Err(CompileError::Refused {
                name: name.into(),
                violations,
            });
        }
        let src_copy = workdir.join(name);
        std::fs::write(&src_copy, source)
            .with_context(|| format!("writing {}", src_copy.display()))?;

        let mut sb = Jail::new()?;
        sb.add_tree(SANDBOX_INCLUDE, &self.include_dir)?;
        for h in HOST_HEADERS {
            let host = Path::new(HOST_INCLUDE).join(h);
            // Missing: clang's diagnostic says which header, and setup.sh
            // installs linux-libc-dev.
            if let Ok(text) = std::fs::read(&host) {
                sb.add_file(&format!("{SANDBOX_HOST_INCLUDE}/{h}"), &text)?;
            }
        }
        sb.add_file(name, source.as_bytes())?;
        let clang = crate::host::which(&self.clang).ok_or_else(|| {
            anyhow!(
                "{} not found; install clang-19 (scripts/setup.sh)",
                self.clang
            )
        })?;
        let real = clang.canonicalize().unwrap_or_else(|_| clang.clone());
        if !sb.visible(&real) {
            // A clang installed outside /usr: show its whole installation
            // (bin/ and the lib/ beside it) to the child.
            if let Some(prefix) = real.parent().and_then(Path::parent) {
                sb.expose(prefix)?;
            }
        }
        let object = format!("out/{name}.o");
        let mut args: Vec<String> = [
            "-g",
            "-O2",
            "-Wall",
            "-Wno-unused-function",
            "-target",
            "bpf",
            "-mcpu=v3",
            "-D__TARGET_ARCH_x86",
            "-D__SCX_TARGET_ARCH_x86",
            "-fno-color-diagnostics",
            // A crash would otherwise write a reproducer (the source) to /tmp.
            "-fno-crash-diagnostics",
            // Only the bundle: no host system or compiler headers.
            "-nostdinc",
        ]
        .map(String::from)
        .to_vec();
        args.extend(crate::bpf::include::include_flags(Path::new(
            SANDBOX_INCLUDE,
        )));
        args.extend([
            "-idirafter".into(),
            SANDBOX_HOST_INCLUDE.into(),
            "-c".into(),
            name.into(),
            "-o".into(),
            object.clone(),
        ]);
        let done = sb
            .run(&clang, &args, &self.limits)
            .with_context(|| format!("running {} in the sandbox", clang.display()))?;
        match done.ending {
            Ending::Exited { code: 0 } => {}
            Ending::Deadline { .. } => {
                return Err(CompileError::Timeout {
                    name: name.into(),
                    secs: self.limits.wall.as_secs(),
                })
            }
            e if e.is_limit() => {
                return Err(CompileError::Limit {
                    name: name.into(),
                    reason: e.reason(),
                })
            }
            _ => {
                return Err(CompileError::Diagnostics {
                    name: name.into(),
                    diagnostics: parse_diagnostics(&done.stderr),
                    raw: done.stderr,
                })
            }
        }
        let bytes = sb
            .read_output(&object, self.limits.file_bytes)
            .context("collecting clang's object from the sandbox")?;
        let obj = workdir.join(format!("{name}.o"));
        std::fs::write(&obj, &bytes).with_context(|| format!("writing {}", obj.display()))?;
        Ok(CompiledObject {
            path: obj,
            sha256: hex::encode(Sha256::digest(&bytes)),
            size_bytes: bytes.len() as u64,
            compile_ms: start.elapsed().as_secs_f64() * 1e3,
        })
    }
}

/// The `-I` directories of a bundle at `dir`, as paths.
fn include_roots(dir: &Path) -> Vec<PathBuf> {
    crate::bpf::include::include_flags(dir)
        .into_iter()
        .map(|f| PathBuf::from(f.trim_start_matches("-I")))
        .collect()
}

/// `name` becomes a file name in the sandbox and the work directory.
fn check_name(name: &str) -> Result<(), CompileError> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name.len() <= 200
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(anyhow!("'{name}' is not a plain source file name").into())
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

    #[test]
    fn refused_lists_each_violation_with_the_file_name() {
        let v = |line, text: &str, reason: &str| Violation {
            line,
            column: 1,
            text: text.into(),
            reason: reason.into(),
        };
        let e = CompileError::Refused {
            name: "x.bpf.c".into(),
            violations: vec![
                v(
                    3,
                    "#include </etc/passwd>",
                    "absolute include paths are not allowed",
                ),
                v(9, "#line 1", "#line is not allowed"),
            ],
        };
        let msg = e.to_string();
        assert!(
            msg.starts_with("x.bpf.c was refused before compiling"),
            "{msg}"
        );
        assert!(
            msg.contains(
                "\n  x.bpf.c:3:1: refused `#include </etc/passwd>`: absolute include paths are not allowed\n  x.bpf.c:9:1:"
            ),
            "{msg}"
        );
    }

    #[test]
    fn names_must_be_plain_file_names() {
        for ok in ["fifo.bpf.c", "my-sched_2.bpf.c"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "../x.bpf.c",
            "a/b.bpf.c",
            ".hidden.c",
            "x y.c",
            "/etc/x.c",
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn allowlist_covers_every_include_root_and_host_headers() {
        let d = tempfile::tempdir().unwrap();
        for f in [
            "scx/common.bpf.h",
            "vmlinux/vmlinux.h",
            "bpf-compat/gnu/stubs.h",
        ] {
            let p = d.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "").unwrap();
        }
        let a = Compiler::new("clang-19", d.path().to_path_buf())
            .allowlist()
            .unwrap();
        for h in [
            "scx/common.bpf.h",
            "vmlinux/vmlinux.h",
            "vmlinux.h",
            "bpf-compat/gnu/stubs.h",
            "gnu/stubs.h",
            "asm-generic/errno.h",
        ] {
            assert!(
                a.contains(h),
                "{h} missing from {:?}",
                a.iter().collect::<Vec<_>>()
            );
        }
        assert!(!a.contains("stdio.h"));
    }
}
