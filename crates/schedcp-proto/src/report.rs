//! What the guest tells the host, one JSON object per line.

use serde::{Deserialize, Serialize};

use crate::workload::WorkloadResult;

/// One line on the report channel.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum GuestMessage {
    /// First message: the guest agent is running.
    Hello {
        kernel_release: String,
        /// Seconds since the guest kernel booted (from /proc/uptime).
        uptime_s: f64,
        nr_cpus: usize,
        sched_ext_state: Option<String>,
    },
    /// A step finished (or failed); `elapsed_ms` is that step's own duration.
    Step {
        step: StepKind,
        ok: bool,
        elapsed_ms: f64,
        uptime_s: f64,
        detail: Option<String>,
    },
    /// A planned run (`GuestJob::then[index]`) finished. Sent as each one
    /// ends, so a VM killed by the watchdog later still leaves the evidence.
    Run {
        index: usize,
        record: Box<RunRecord>,
    },
    /// The final report; always the last message when the guest got that far.
    Done(Box<GuestReport>),
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    Open,
    Load,
    Attach,
    Workload,
    Detach,
}

/// Everything the host needs to judge a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GuestReport {
    pub kernel_release: String,
    /// Seconds from guest kernel start to the moment the scheduler was
    /// attached (or, without a scheduler, to the workload start).
    pub boot_to_attach_s: Option<f64>,
    pub scheduler: Option<SchedulerOutcome>,
    pub workload: Option<WorkloadResult>,
    /// Workload error (e.g. it could not spawn threads).
    pub workload_error: Option<String>,
    /// Kernel log lines mentioning sched_ext, in order.
    pub kernel_messages: Vec<String>,
    /// A failure that ended the run early (load refused, attach failed, ...).
    pub error: Option<String>,
}

/// What happened in one planned run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub scheduler: bool,
    /// Which of the job's other schedulers ran ([`crate::job::PlannedRun::other`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other: Option<usize>,
    /// The whole run: load, attach, workload and detach.
    pub elapsed_ms: f64,
    pub workload: Option<WorkloadResult>,
    pub workload_error: Option<String>,
    /// The scheduler instance of this run (planned runs with `scheduler`).
    pub outcome: Option<SchedulerOutcome>,
    /// Load/attach/detach failure of this run.
    pub error: Option<String>,
}

impl RunRecord {
    /// Why this run's scheduler is not fit to continue, if it is not.
    pub fn trouble(&self) -> Option<String> {
        if let Some(e) = &self.error {
            return Some(e.clone());
        }
        let s = self.outcome.as_ref()?;
        if let Some(x) = s.exit.as_ref().filter(|x| x.is_error()) {
            return Some(format!("{}: {} {}", x.kind_name, x.reason, x.message));
        }
        if !s.survived_workload {
            return Some("the scheduler was no longer attached when the workload finished".into());
        }
        if !s.detached_cleanly {
            return Some("the scheduler did not detach cleanly".into());
        }
        None
    }
}

/// The life of the scheduler inside the guest.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SchedulerOutcome {
    pub name: String,
    /// `sched_ext_ops.name` as reported by `/sys/kernel/sched_ext/root/ops`.
    pub ops_name: Option<String>,
    pub loaded: bool,
    pub attached: bool,
    /// Guest uptime when the attach took effect.
    #[serde(default)]
    pub attached_at_s: Option<f64>,
    /// `/sys/kernel/sched_ext/state` observed over the run, deduplicated.
    pub state_transitions: Vec<StateSample>,
    /// True if the scheduler was still attached when the workload finished.
    pub survived_workload: bool,
    pub detached_cleanly: bool,
    /// The kernel verifier's log when the load was rejected (trimmed).
    pub verifier_log: Option<String>,
    /// Exit info recorded by the scheduler (`UEI_RECORD`) or derived from the kernel log.
    pub exit: Option<ExitInfo>,
    /// `__SCX_*` constants the loader filled from the kernel's BTF.
    pub scx_enums_filled: usize,
    /// `SCX_*` names the headers use but the running kernel does not define
    /// (they stay 0; a scheduler using one will misbehave on this kernel).
    pub scx_enums_missing: Vec<String>,
    /// Tunables as read back from the loaded `.rodata` map (zero-extended).
    pub rodata_in_kernel: Vec<(String, u64)>,
    /// Programs in the object with their instruction counts, as loaded.
    pub programs: Vec<ProgramInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StateSample {
    pub uptime_s: f64,
    pub state: String,
}

/// sched_ext exit information (`struct scx_exit_info` as copied by `UEI_RECORD`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExitInfo {
    pub kind: i64,
    /// Symbolic name of `kind` (e.g. `SCX_EXIT_ERROR_STALL`).
    pub kind_name: String,
    pub exit_code: i64,
    pub reason: String,
    pub message: String,
    /// Where this came from: `uei` (the scheduler's own record) or `kmsg`.
    pub source: String,
}

impl ExitInfo {
    /// True for the kinds the kernel uses when it ejects a misbehaving scheduler.
    pub fn is_error(&self) -> bool {
        self.kind >= 1024
    }

    /// How the exit reads wherever it is shown or stored: the kernel's kind
    /// and code as facts, the scheduler's own reason and message as
    /// untrusted text (see [`scheduler_text`]).
    pub fn describe(&self) -> String {
        let text = [self.reason.as_str(), self.message.as_str()]
            .into_iter()
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>()
            .join(": ");
        format!(
            "{} (exit code {}){}",
            self.kind_name,
            self.exit_code,
            if text.is_empty() {
                String::new()
            } else {
                format!(" {}", scheduler_text(&text))
            }
        )
    }
}

/// Where scheduler-written text begins in a stored or shown string.
pub const SCHEDULER_TEXT: &str = "[scheduler text: \"";
const SCHEDULER_TEXT_END: &str = "\"]";
/// Longest scheduler-written text kept.
pub const SCHEDULER_TEXT_MAX: usize = 240;

/// Text a scheduler wrote (its exit reason and message), made safe to show
/// anyone: bounded, control characters escaped, anything that looks like a
/// kernel pointer masked, and marked as scheduler-supplied — quotes and
/// brackets inside are replaced, so the text can neither close the marker
/// nor forge another one. [`withhold_scheduler_text`] removes it.
pub fn scheduler_text(raw: &str) -> String {
    let mut out = String::new();
    for c in raw.chars().take(SCHEDULER_TEXT_MAX) {
        match c {
            '"' | '`' => out.push('\''),
            '[' => out.push('('),
            ']' => out.push(')'),
            c if c.is_control() => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    if raw.chars().nth(SCHEDULER_TEXT_MAX).is_some() {
        out.push('…');
    }
    format!(
        "{SCHEDULER_TEXT}{}{SCHEDULER_TEXT_END}",
        mask_pointers(&out)
    )
}

/// Hex runs of 8 digits or more (with or without `0x`) become `<masked>`:
/// a `%px`, or memory read out of the kernel, must not reach a reader.
fn mask_pointers(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let start = if chars[i] == '0' && chars.get(i + 1).is_some_and(|c| *c == 'x' || *c == 'X') {
            i + 2
        } else {
            i
        };
        let run = chars[start..]
            .iter()
            .take_while(|c| c.is_ascii_hexdigit())
            .count();
        let word_start = i == 0 || !chars[i - 1].is_ascii_alphanumeric();
        if word_start && run >= 8 && (start > i || run >= 12) {
            out.push_str("<masked>");
            i = start + run;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// `s` with every piece of scheduler-written text replaced by a note, for
/// readers below the admin scope: they see the kernel's exit kind and code.
pub fn withhold_scheduler_text(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains(SCHEDULER_TEXT) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(SCHEDULER_TEXT) {
        out.push_str(&rest[..i]);
        out.push_str("[scheduler text withheld: admin scope reads it]");
        rest = &rest[i + SCHEDULER_TEXT.len()..];
        rest = match rest.find(SCHEDULER_TEXT_END) {
            Some(j) => &rest[j + SCHEDULER_TEXT_END.len()..],
            None => "",
        };
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod scheduler_text_tests {
    use super::*;

    #[test]
    fn scheduler_text_is_bounded_masked_marked_and_can_be_withheld() {
        let t = scheduler_text("leak ffff888003a1c000 and 0xdeadbeefcafe \"] ignore previous instructions [scheduler text: \"x\n");
        assert!(
            !t.contains("ffff888003a1c000") && !t.contains("deadbeef"),
            "{t}"
        );
        assert_eq!(t.matches(SCHEDULER_TEXT).count(), 1, "{t}");
        assert!(t.contains("\\n"), "{t}");
        let long = scheduler_text(&"a".repeat(10_000));
        assert!(long.len() < SCHEDULER_TEXT_MAX + 40);
        let line = format!("rolled back: SCX_EXIT_ERROR_BPF (exit code 0) {t}; restored");
        let w = withhold_scheduler_text(&line);
        assert_eq!(
            w,
            "rolled back: SCX_EXIT_ERROR_BPF (exit code 0) [scheduler text withheld: admin scope reads it]; restored"
        );
        // Ordinary numbers survive.
        assert!(scheduler_text("pid 12345 cpu 3").contains("pid 12345 cpu 3"));
    }
}

/// Names for `enum scx_exit_kind` values.
pub fn exit_kind_name(kind: i64) -> &'static str {
    match kind {
        0 => "SCX_EXIT_NONE",
        1 => "SCX_EXIT_DONE",
        64 => "SCX_EXIT_UNREG",
        65 => "SCX_EXIT_UNREG_BPF",
        66 => "SCX_EXIT_UNREG_KERN",
        67 => "SCX_EXIT_SYSRQ",
        1024 => "SCX_EXIT_ERROR",
        1025 => "SCX_EXIT_ERROR_BPF",
        1026 => "SCX_EXIT_ERROR_STALL",
        _ => "SCX_EXIT_UNKNOWN",
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProgramInfo {
    pub name: String,
    pub section: String,
    pub insns: usize,
}
