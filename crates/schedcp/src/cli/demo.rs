//! `schedcp lab demo`: the main job on embedded defaults
//! ([`schedcp::tune::main_job`]); this file parses its arguments and
//! renders its steps.

use clap::Args;
use schedcp::compare::Criteria;
use schedcp::config::Config;
use schedcp::deploy::DeployState;
use schedcp::error::{exit, Error};
use schedcp::lab::Lab;
use schedcp::node::NodeTarget;
use schedcp::tune::main_job::{self, DeployTarget, MainJobOptions, Step};

use super::output::Output;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Runs a side in each comparison (interleaved ABBA in one VM boot).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(2..=50))]
    runs: u32,
    /// Stop after the comparisons: no verification, no lab node.
    #[arg(long)]
    no_deploy: bool,
}

pub fn run(cfg: Config, a: DemoArgs, out: Output) -> Result<i32, Error> {
    let opts = MainJobOptions {
        runs: a.runs as usize,
        deploy: !a.no_deploy,
        criteria: Criteria::default(),
    };
    let pb = out.spinner();
    // The text is the steps as they happen; the JSON document, the report.
    let human = out.streams_text();
    let on = |s: Step<'_>| {
        match s {
        Step::Progress(m) => pb.set_message(m.to_string()),
        _ if !human => {}
        Step::Compared(ab) => pb.suspend(|| print!("{}", ab.render())),
        Step::Decided(d) => pb.suspend(|| println!("\n== {d} ==")),
        Step::Verified(v) => pb.suspend(|| print!("{}", v.render())),
        Step::TargetUp { what, boot_s } => {
            pb.suspend(|| println!("{what} up in {boot_s:.1} s"))
        }
        Step::Deployed(d) => pb.suspend(|| match d.state {
            DeployState::Active => println!(
                "deploy: ACTIVE after its canary — {:.1} s from request (switch {:.0} ms, {} KPI windows within thresholds)",
                d.timings.request_to_active_ms.unwrap_or(f64::NAN) / 1e3,
                d.timings.switch_ms.unwrap_or(f64::NAN),
                d.windows.len()
            ),
            DeployState::RolledBack => println!(
                "deploy: ROLLED BACK by the breaker — {}",
                d.reason.as_deref().unwrap_or("?")
            ),
            other => println!("deploy ended in state {other:?}"),
        }),
        Step::RolledBack(r) => pb.suspend(|| {
            println!(
                "rollback: back on the kernel default in {:.0} ms",
                r.timings.breach_to_rollback_ms.unwrap_or(f64::NAN)
            )
        }),
    }
    };
    let lab = Lab::new(cfg.clone());
    let target = |log: &dyn Fn(&str)| -> Result<Box<dyn DeployTarget>, Error> {
        Ok(Box::new(NodeTarget::start(&lab, log)?))
    };
    let report = main_job::run(&cfg, &opts, &target, &on);
    pb.finish_and_clear();
    let report = report?;
    out.finish_streamed(&report)?;
    let mut code = if report.clean() {
        exit::OK
    } else {
        exit::SCHEDULER
    };
    if let Some(d) = &report.deploy {
        let verified = d.verify.token.is_some();
        let behaved = d
            .deployment
            .as_ref()
            .is_some_and(|x| matches!(x.state, DeployState::Active | DeployState::RolledBack));
        if !verified || !behaved {
            code = code.max(exit::SCHEDULER);
        }
    }
    Ok(code)
}
