use std::time::Duration;

use clap::Args;
use schedcp::config::Config;
use schedcp::error::{exit, Error};
use schedcp::observe::detail::{self, TaskSort, Topic};
use schedcp::observe::summary;

use crate::cli::output::Output;

/// Longest sampling window accepted (the command blocks for it).
const MAX_WINDOW_MS: u64 = 60_000;

#[derive(Debug, Args)]
pub struct SummaryArgs {
    /// Token budget for the JSON report (cl100k tokens); parts are dropped, least essential first, to fit.
    #[arg(long, value_name = "TOKENS")]
    budget: Option<usize>,
    /// Sampling window in milliseconds (rates and shares are over this window).
    #[arg(long, value_name = "MS")]
    window_ms: Option<u64>,
}

#[derive(Debug, Args)]
pub struct DetailArgs {
    /// What to show.
    #[arg(value_enum)]
    topic: Topic,
    /// Rows to show at most.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Order of `tasks` rows.
    #[arg(long, value_enum, default_value = "cpu")]
    sort: TaskSort,
    #[arg(long, value_name = "MS")]
    window_ms: Option<u64>,
}

fn window(cfg: &Config, ms: Option<u64>) -> Result<Duration, Error> {
    let ms = ms.unwrap_or(cfg.observe.summary_window_ms);
    if !(10..=MAX_WINDOW_MS).contains(&ms) {
        return Err(Error::Input(format!(
            "window must be between 10 and {MAX_WINDOW_MS} ms, got {ms}"
        )));
    }
    Ok(Duration::from_millis(ms))
}

pub fn run_summary(cfg: Config, a: SummaryArgs, out: Output) -> Result<i32, Error> {
    let w = window(&cfg, a.window_ms)?;
    let budget = a.budget.unwrap_or(cfg.observe.summary_budget_tokens);
    if !(summary::MIN_BUDGET..=summary::MAX_BUDGET).contains(&budget) {
        return Err(Error::Input(format!(
            "--budget must be between {} and {} tokens, got {budget}",
            summary::MIN_BUDGET,
            summary::MAX_BUDGET
        )));
    }
    let s = summary::summary(w, budget).map_err(|e| Error::Input(format!("{e:#}")))?;
    // Compact: the JSON is what the budget is measured against.
    out.emit_compact(&s)?;
    Ok(exit::OK)
}

pub fn run_detail(cfg: Config, a: DetailArgs, out: Output) -> Result<i32, Error> {
    let w = window(&cfg, a.window_ms)?;
    if a.limit == 0 || a.limit > detail::MAX_LIMIT {
        return Err(Error::Input(format!(
            "--limit must be between 1 and {}, got {}",
            detail::MAX_LIMIT,
            a.limit
        )));
    }
    let d = detail::detail(a.topic, w, a.limit, a.sort).map_err(Error::Internal)?;
    out.emit(&d)?;
    Ok(exit::OK)
}
