//! The one way to compare A with B: every run's value kept, runs
//! interleaved ABBA, and one judgement — the relative change with its
//! confidence interval (Hodges–Lehmann / Moses), the Mann–Whitney p-value
//! and a verdict (improved, regressed, no significant change).
//!
//! - [`stats`]: the statistics (summaries, the test, the interval, the verdict).
//! - [`ab`]: the run order, the report shape every command prints, and the
//!   winner rule (only a significant improvement is ever picked).

pub mod ab;
pub mod stats;

pub use ab::{abba, best, AbReport, Arm, Metric, Setting, Side};
pub use stats::{Comparison, Criteria, Verdict};
