//! schedcp's guest agent. It runs as `/init` in the lab micro-VM: mounts what
//! the loader needs, loads and attaches the scheduler the host sent, runs one
//! workload, detaches, and reports everything over a virtio-serial port.

mod channel;
mod loader;
mod run;
mod sched_ext;
mod sys;
mod workloads;

use schedcp_proto::report::GuestMessage;
use schedcp_proto::REPORT_PORT_NAME;

fn main() {
    if std::env::args().nth(1).as_deref() == Some(schedcp_proto::PROTOCOL_FLAG) {
        println!("{}", schedcp_proto::PROTOCOL_FINGERPRINT);
        return;
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
