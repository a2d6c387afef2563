//! `schedcp lab demo`: the main job on embedded defaults, end to end.
//!
//! 1. Compare every built-in scheduler with the kernel default on the
//!    workload it was written for (micro-VM runs).
//! 2. Verify the one that improved most (every stage, a signed token).
//! 3. Deploy it on a lab node (a micro-VM running this schedcp as its
//!    daemon) under a canary with that workload, over the node's REST API,
//!    as an agent would; then roll it back by hand.

use std::time::{Duration, Instant};

use clap::Args;
use schedcp::config::Config;
use schedcp::error::{exit, Error};
use schedcp::lab::compare::Comparison;
use schedcp::lab::node::{Node, NodeOptions};
use schedcp::lab::Lab;
use schedcp::verify::pipeline::{object_store, Options};
use schedcp::verify::report::VerifyReport;
use schedcp::verify::{service, token};
use serde::Serialize;
use serde_json::{json, Value};

use super::lab::{compare_runs, request, VmArgs};
use super::output;

/// Each built-in scheduler on the workload it was written for.
pub const DEMO: &[(&str, &str)] = &[
    ("batch", "batch"),
    ("latency", "wakeup"),
    ("vtime", "pingpong"),
    ("fifo", "batch"),
];

/// The canary of the demo's deployment: short, judged every 3 s.
const CANARY_S: u64 = 10;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Runs per side for each comparison.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    runs: u32,
    /// Stop after the comparisons: no verification, no lab node.
    #[arg(long)]
    no_deploy: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct DemoReport {
    comparisons: Vec<Comparison>,
    /// The winner verified and deployed on a lab node (absent with --no-deploy).
    deploy: Option<DemoDeploy>,
}

#[derive(Serialize)]
struct DemoDeploy {
    policy: String,
    workload: String,
    improvement_pct: Option<f64>,
    verify: VerifyReport,
    /// The deployment as the node's daemon reports it (state, reason, KPIs, timings).
    deployment: Option<Value>,
    /// The manual rollback that ends the demo, when the canary passed.
    rollback: Option<Value>,
    node_boot_s: Option<f64>,
}

pub fn run(cfg: Config, a: DemoArgs, quiet: bool) -> Result<i32, Error> {
    let lab = Lab::new(cfg.clone());
    let mut comparisons = Vec::new();
    for (policy, workload) in DEMO {
        let vm = VmArgs::for_workload(workload)?;
        let cand = request(&cfg, policy, Vec::new(), &vm);
        let base = request(&cfg, "default", Vec::new(), &vm);
        let cmp = compare_runs(&lab, &base, &cand, a.runs, quiet)?;
        if !a.json {
            print!("{}", cmp.render());
        }
        comparisons.push(cmp);
    }
    let failed = comparisons
        .iter()
        .any(|c| !c.baseline.failures.is_empty() || !c.candidate.failures.is_empty());
    let mut deploy = None;
    let mut code = if failed { exit::SCHEDULER } else { exit::OK };
    if !a.no_deploy {
        match winner(&comparisons) {
            Some(w) => {
                let (d, c) = verify_and_deploy(&cfg, &lab, w, a.json, quiet)?;
                deploy = Some(d);
                code = code.max(c);
            }
            None => {
                if !a.json {
                    println!("\nno built-in scheduler completed its runs; nothing to deploy");
                }
                code = exit::SCHEDULER;
            }
        }
    }
    if a.json {
        output::json(&DemoReport {
            comparisons,
            deploy,
        })?;
    }
    Ok(code)
}

/// The comparison whose candidate improved most, among those that ran clean.
fn winner(comparisons: &[Comparison]) -> Option<&Comparison> {
    comparisons
        .iter()
        .filter(|c| c.baseline.failures.is_empty() && c.candidate.failures.is_empty())
        .max_by(|a, b| {
            let key = |c: &Comparison| c.improvement_pct.unwrap_or(f64::NEG_INFINITY);
            key(a).total_cmp(&key(b))
        })
}

fn verify_and_deploy(
    cfg: &Config,
    lab: &Lab,
    w: &Comparison,
    json_out: bool,
    quiet: bool,
) -> Result<(DemoDeploy, i32), Error> {
    let policy = w.candidate.policy.clone();
    let say = |m: &str| {
        if !json_out {
            println!("{m}");
        }
    };
    say(&format!(
        "\n== best result: {policy} ({} on {}): verify it, then deploy it on a lab node ==",
        w.improvement_pct
            .map(|p| format!("{p:+.1}%"))
            .unwrap_or_else(|| "no improvement figure".into()),
        w.workload
    ));
    let opts = Options {
        workloads: vec![w
            .workload
            .parse()
            .map_err(|e: schedcp_proto::workload::SpecError| Error::Internal(e.into()))?],
        // Four a side: the fewest with which the significance test can speak.
        runs: 4,
        vcpus: cfg.lab.vcpus,
        mem_mib: cfg.lab.mem_mib,
        vm_timeout: Duration::from_secs(cfg.lab.timeout_s),
        token_ttl: token::DEFAULT_TTL,
    };
    let subject = service::subject(cfg, &policy)?;
    let pb = output::spinner(quiet || json_out);
    let report = service::verify_all(cfg, &[subject], &opts, 1, &|_, m| {
        pb.set_message(format!("verify {policy}: {m}"))
    })?
    .pop()
    .expect("one subject, one result")?;
    pb.finish_and_clear();
    if !json_out {
        print!("{}", report.render());
    }
    let mut out = DemoDeploy {
        policy: policy.clone(),
        workload: w.workload.clone(),
        improvement_pct: w.improvement_pct,
        verify: report,
        deployment: None,
        rollback: None,
        node_boot_s: None,
    };
    let (Some(tok), Some(sha)) = (&out.verify.token, &out.verify.object_sha256) else {
        say("not verified, so not deployed: a scheduler without a token never attaches");
        return Ok((out, exit::SCHEDULER));
    };
    let object = std::fs::read(object_store(cfg).join(format!("{sha}.bpf.o")))
        .map_err(|e| Error::Setup(format!("reading the verified object: {e}")))?;

    let pb = output::spinner(quiet || json_out);
    pb.set_message("booting the lab node");
    let t = Instant::now();
    let node = Node::start(
        lab,
        &NodeOptions {
            config_extra: "window_s = 3\n".into(),
            lifetime: Duration::from_secs(1800),
            ..NodeOptions::default()
        },
        &|m| pb.set_message(format!("lab node: {m}")),
    )?;
    out.node_boot_s = Some(t.elapsed().as_secs_f64());
    let api = node.client(Duration::from_secs(900))?;
    pb.set_message(format!(
        "deploying {policy} on the node: baseline, switch, {CANARY_S} s canary running {}",
        w.workload
    ));
    use base64::Engine as _;
    let job = api
        .call(
            "deploy",
            &json!({
                "token": tok,
                "object_base64": base64::engine::general_purpose::STANDARD.encode(&object),
                "canary_s": CANARY_S,
                "workload": w.workload,
                "wait_seconds": 600,
            }),
        )
        .map_err(|e| Error::Internal(anyhow::anyhow!("deploy on the lab node: {e}")))?;
    pb.finish_and_clear();
    if job["state"] != "succeeded" {
        return Err(Error::Internal(anyhow::anyhow!(
            "the deploy job on the lab node ended {}: {}",
            job["state"],
            job["error"]
        )));
    }
    let d = job["result"].clone();
    let state = d["state"].as_str().unwrap_or("?").to_string();
    let ms = |k: &str| d["timings"][k].as_f64().unwrap_or(f64::NAN);
    say(&format!(
        "lab node up in {:.1} s (kernel {}, sched_ext)",
        out.node_boot_s.unwrap_or(0.0),
        node.kernel_release
    ));
    let mut code = exit::OK;
    match state.as_str() {
        "active" => {
            say(&format!(
                "deploy: ACTIVE after its canary — {:.1} s from request (switch {:.0} ms, {} KPI windows within thresholds)",
                ms("request_to_active_ms") / 1e3,
                ms("switch_ms"),
                d["windows"].as_array().map_or(0, Vec::len)
            ));
            let r = api
                .call("deploy_rollback", &json!({ "reason": "end of the demo" }))
                .map_err(|e| Error::Internal(anyhow::anyhow!("rollback on the lab node: {e}")))?;
            say(&format!(
                "rollback: back on the kernel default in {:.0} ms",
                r["timings"]["breach_to_rollback_ms"]
                    .as_f64()
                    .unwrap_or(f64::NAN)
            ));
            out.rollback = Some(r);
        }
        "rolled_back" => {
            say(&format!(
                "deploy: ROLLED BACK by the breaker — {}",
                d["reason"].as_str().unwrap_or("?")
            ));
        }
        _ => {
            say(&format!("deploy ended in state {state}: {d:#}"));
            code = exit::FAILURE;
        }
    }
    out.deployment = Some(d);
    drop(node);
    Ok((out, code))
}
