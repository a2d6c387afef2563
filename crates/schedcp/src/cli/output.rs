//! The one output path of the CLI: every command hands its report to
//! [`Output`], which prints it as one JSON document (`--json`) or as the
//! report's own text; and the progress display, hidden under `--json`.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use schedcp::error::Error;
use serde::Serialize;

/// What a command prints on stdout: serialized with `--json`, rendered
/// for a person otherwise.
pub trait Report: Serialize {
    /// The human text, newline-terminated (empty prints nothing).
    fn render(&self) -> String;

    /// A line for a person on stderr, after the text; not printed with
    /// `--json`, where the document says it.
    fn notice(&self) -> Option<String> {
        None
    }
}

/// Library reports that render themselves.
macro_rules! rendered_by_the_library {
    ($($t:ty),* $(,)?) => {$(
        impl Report for $t {
            fn render(&self) -> String {
                <$t>::render(self)
            }
        }
    )*};
}

rendered_by_the_library!(
    schedcp::doctor::DoctorReport,
    schedcp::lab::report::LabReport,
    schedcp::verify::report::VerifyReport,
    schedcp::observe::probes::ProbeReport,
    schedcp::observe::profilers::ProfileReport,
    schedcp::observe::summary::Summary,
    schedcp::observe::detail::Detail,
    schedcp::selfbench::canary_overhead::Report,
    schedcp::selfbench::tune_bench::Report,
    schedcp::tune::TuneReport,
    schedcp::selfbench::api_latency::Report,
    schedcp::selfbench::api_load::Report,
    schedcp::selfbench::probe_overhead::Report,
    schedcp::selfbench::policy_search::Report,
);

/// How the command line asked for output: the global `--json` and `--quiet`.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub json: bool,
    pub quiet: bool,
}

impl Output {
    /// The report as pretty JSON, or its text (and its notice on stderr).
    pub fn emit(&self, r: &impl Report) -> Result<(), Error> {
        self.print(r, serde_json::to_string_pretty)
    }

    /// The same with compact JSON: for output sized against a token budget.
    pub fn emit_compact(&self, r: &impl Report) -> Result<(), Error> {
        self.print(r, serde_json::to_string)
    }

    /// [`emit`](Self::emit), except that `--quiet` silences the text (the
    /// JSON document is always printed): for reports that only confirm.
    pub fn emit_unless_quiet(&self, r: &impl Report) -> Result<(), Error> {
        if self.quiet && !self.json {
            return Ok(());
        }
        self.emit(r)
    }

    /// Whether the command should print its text as it goes: for commands
    /// (the demo) whose text is a log of steps, and whose JSON document is
    /// the final report alone ([`finish_streamed`](Self::finish_streamed)).
    pub fn streams_text(&self) -> bool {
        !self.json
    }

    /// The final report of a command that printed its text step by step:
    /// the JSON document with `--json`, nothing more otherwise.
    pub fn finish_streamed(&self, r: &impl Serialize) -> Result<(), Error> {
        if self.json {
            println!("{}", to_json(r, serde_json::to_string_pretty)?);
        }
        Ok(())
    }

    /// A spinner on stderr when it is a terminal; hidden with `--quiet` or
    /// `--json`, and invisible when stderr is not a terminal (the same
    /// messages go to the debug log).
    pub fn spinner(&self) -> ProgressBar {
        if self.quiet || self.json {
            return ProgressBar::hidden();
        }
        let pb = ProgressBar::new_spinner();
        pb.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed}] {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        pb.enable_steady_tick(Duration::from_millis(120));
        pb
    }

    fn print<R: Report>(
        &self,
        r: &R,
        to_string: fn(&R) -> serde_json::Result<String>,
    ) -> Result<(), Error> {
        if self.json {
            println!("{}", to_json(r, to_string)?);
        } else {
            print!("{}", r.render());
            if let Some(n) = r.notice() {
                eprintln!("{n}");
            }
        }
        Ok(())
    }
}

fn to_json<T: ?Sized>(
    value: &T,
    to_string: fn(&T) -> serde_json::Result<String>,
) -> Result<String, Error> {
    to_string(value).map_err(|e| Error::Internal(e.into()))
}
