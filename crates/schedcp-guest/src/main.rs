//! schedcp's guest agent. It runs as `/init` in the lab micro-VM: mounts what
//! the loader needs, loads and attaches the scheduler the host sent, runs one
//! workload, detaches, and reports everything over a virtio-serial port.

mod channel;
mod knobs;
mod node;
mod run;
mod sys;
mod workloads;

use schedcp_proto::report::GuestMessage;
use schedcp_proto::REPORT_PORT_NAME;
use schedcp_scx::sysfs as sched_ext;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some(schedcp_proto::PROTOCOL_FLAG) => {
            println!("{}", schedcp_proto::PROTOCOL_FINGERPRINT);
            return;
        }
        // On a lab node the deploy canary runs built-in workloads this way.
        Some("workload") => std::process::exit(standalone_workload(args.get(2))),
        _ => {}
    }
    if sys::is_init() {
        if let Err(e) = sys::mount_pseudo_filesystems() {
            eprintln!("schedcp-guest: {e:#}");
            sys::power_off();
        }
    }
    let mut channel = match channel::ReportChannel::open(REPORT_PORT_NAME) {
        Ok(c) => c,
        Err(e) => {
            // The console is the only way left to say why.
            eprintln!("schedcp-guest: {e:#}");
            sys::power_off();
        }
    };
    if node::is_node() {
        node::run(&mut channel);
    }
    let _ = channel.send(&GuestMessage::Hello {
        kernel_release: sys::kernel_release(),
        uptime_s: sys::uptime_s(),
        nr_cpus: sys::nr_cpus(),
        sched_ext_state: sched_ext::state(),
    });
    let report = run::run_job(&mut channel);
    if let Err(e) = channel.send(&GuestMessage::Done(Box::new(report))) {
        eprintln!("schedcp-guest: could not send the report: {e:#}");
    }
    sys::power_off();
}

/// `schedcp-guest workload SPEC`: run one built-in workload, print its
/// result as JSON. Exit codes: 0 ran, 2 bad spec, 1 the workload failed.
fn standalone_workload(spec: Option<&String>) -> i32 {
    let Some(spec) = spec else {
        eprintln!("usage: schedcp-guest workload SPEC   (e.g. pingpong:loops=200)");
        return 2;
    };
    let spec: schedcp_proto::workload::WorkloadSpec = match spec.parse() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("schedcp-guest: invalid workload {spec:?}: {e}");
            return 2;
        }
    };
    match workloads::run(&spec) {
        Ok(r) => match serde_json::to_string(&r) {
            Ok(j) => {
                println!("{j}");
                0
            }
            Err(e) => {
                eprintln!("schedcp-guest: {e}");
                1
            }
        },
        Err(e) => {
            eprintln!("schedcp-guest: workload failed: {e:#}");
            1
        }
    }
}
