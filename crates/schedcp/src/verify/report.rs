//! The verifier's report: one record per stage, in order, each with its
//! verdict, time and reasons; the token when every stage passed.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StageVerdict {
    Pass,
    /// Passed, with findings worth reading.
    Warn,
    Fail,
    /// Not run because an earlier stage failed.
    Skipped,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Stage {
    pub name: String,
    pub verdict: StageVerdict,
    pub ms: f64,
    pub reasons: Vec<String>,
    /// Stage-specific evidence (diagnostics, analysis, lab runs, statistics).
    pub detail: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct VerifyReport {
    /// What was verified: a file path or `policy@version`.
    pub subject: String,
    pub policy: String,
    pub version: u32,
    pub source_sha256: String,
    pub object_sha256: Option<String>,
    pub ops_name: Option<String>,
    pub kernel_release: Option<String>,
    pub accel: Option<String>,
    pub stages: Vec<Stage>,
    pub passed: bool,
    pub total_s: f64,
    /// Signed deployment token (PASETO v4.public), when every stage passed.
    pub token: Option<String>,
}

impl VerifyReport {
    /// SHA-256 of the evidence a token binds: the subject and every stage
    /// before the token's own (not the token, nor the total time).
    pub fn digest(&self) -> String {
        let stages: Vec<&Stage> = self.stages.iter().filter(|s| s.name != "token").collect();
        let evidence = serde_json::json!({
            "subject": self.subject,
            "policy": self.policy,
            "version": self.version,
            "source_sha256": self.source_sha256,
            "object_sha256": self.object_sha256,
            "ops_name": self.ops_name,
            "kernel_release": self.kernel_release,
            "accel": self.accel,
            "stages": stages,
        });
        hex::encode(Sha256::digest(evidence.to_string().as_bytes()))
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "verify {} — {}",
            self.subject,
            if self.passed { "PASSED" } else { "FAILED" }
        );
        for st in &self.stages {
            let mark = match st.verdict {
                StageVerdict::Pass => "pass",
                StageVerdict::Warn => "warn",
                StageVerdict::Fail => "FAIL",
                StageVerdict::Skipped => "skip",
            };
            let _ = writeln!(s, "  [{mark}] {:<16} {:>8.0} ms", st.name, st.ms);
            for r in &st.reasons {
                let _ = writeln!(s, "         {r}");
            }
        }
        if let (Some(k), Some(a)) = (&self.kernel_release, &self.accel) {
            let _ = writeln!(s, "  guest kernel {k}, accelerator {a}");
        }
        let _ = writeln!(s, "  total {:.1} s", self.total_s);
        if let Some(t) = &self.token {
            let _ = writeln!(s, "token: {t}");
        }
        s
    }
}
