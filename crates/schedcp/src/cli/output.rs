//! JSON or human output, and the progress display.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use schedcp::error::Error;
use serde::Serialize;

pub fn json<T: Serialize>(value: &T) -> Result<(), Error> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Internal(e.into()))?;
    println!("{text}");
    Ok(())
}

/// Compact JSON: for output sized against a token budget.
pub fn json_compact<T: Serialize>(value: &T) -> Result<(), Error> {
    let text = serde_json::to_string(value).map_err(|e| Error::Internal(e.into()))?;
    println!("{text}");
    Ok(())
}

/// A spinner on stderr when it is a terminal; invisible otherwise (and the
/// same messages go to the debug log).
pub fn spinner(quiet: bool) -> ProgressBar {
    if quiet {
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
