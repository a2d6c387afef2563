//! The schedevents probe (bpf/probes/schedevents.bpf.c): per-process counts
//! of scheduler events, summed over CPUs after detach.

use std::fmt::Write as _;
use std::mem::MaybeUninit;
use std::os::fd::AsFd;

use libbpf_rs::{MapCore, MapFlags};
use serde::Serialize;

use super::request::Filter;
use super::session::Attached;
use super::skel::{self, schedevents::*};
use crate::error::Error;

const NAME: &str = "schedevents";

/// Event counts, in the order of `enum ev_kind` in schedevents.bpf.c.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct EventCounts {
    /// Times a thread was switched out.
    pub switches: u64,
    /// ... of which while still runnable (preempted or yielded).
    pub involuntary: u64,
    pub wakeups: u64,
    /// First wakeups of new tasks.
    pub wakeups_new: u64,
    pub migrations: u64,
    /// Tasks created (processes and threads), counted for the parent.
    pub forks: u64,
    pub execs: u64,
}

impl EventCounts {
    fn from_kernel(n: &[u64; 7]) -> EventCounts {
        EventCounts {
            switches: n[0],
            involuntary: n[1],
            wakeups: n[2],
            wakeups_new: n[3],
            migrations: n[4],
            forks: n[5],
            execs: n[6],
        }
    }

    /// Events counted (involuntary switches are a subset of switches).
    pub fn total(&self) -> u64 {
        self.switches + self.wakeups + self.wakeups_new + self.migrations + self.forks + self.execs
    }

    fn add(&mut self, o: &EventCounts) {
        self.switches += o.switches;
        self.involuntary += o.involuntary;
        self.wakeups += o.wakeups;
        self.wakeups_new += o.wakeups_new;
        self.migrations += o.migrations;
        self.forks += o.forks;
        self.execs += o.execs;
    }
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ProcessEvents {
    pub tgid: u32,
    pub comm: String,
    #[serde(flatten)]
    pub counts: EventCounts,
    pub total: u64,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Schedevents {
    /// Processes with at least one event.
    pub processes: usize,
    /// Events not counted because the map was full.
    pub dropped: u64,
    pub totals: EventCounts,
    /// The processes with the most events.
    pub top: Vec<ProcessEvents>,
}

/// Loads and attaches the probe, runs `during` while attached, detaches,
/// and reads the counts, keeping the `top` busiest processes.
pub(super) fn observe<R>(
    filter: &Filter,
    top: usize,
    during: impl FnOnce(&Attached) -> R,
) -> Result<(Schedevents, R), Error> {
    let mut object = MaybeUninit::uninit();
    let mut probe =
        skel::open_load_attach::<ScpSchedeventsSkelBuilder>(NAME, &mut object, |open| {
            skel::set_filter(open.maps.rodata_data.as_deref_mut(), filter)
        })?;
    let p = &probe.progs;
    let attached = Attached::new(&[
        p.scp_ev_switch.as_fd(),
        p.scp_ev_wake.as_fd(),
        p.scp_ev_wake_new.as_fd(),
        p.scp_ev_migrate.as_fd(),
        p.scp_ev_fork.as_fd(),
        p.scp_ev_exec.as_fd(),
    ])?;
    let out = during(&attached);
    probe.links = ScpSchedeventsLinks::default();
    let dropped = probe.maps.bss_data.as_deref().map_or(0, |b| b.dropped);
    let procs = read_processes(&probe.maps.scp_ev_counts, &probe.maps.scp_ev_comm)?;
    Ok((summarize(procs, dropped, top), out))
}

fn map_error(map: &str) -> impl Fn(libbpf_rs::Error) -> Error + '_ {
    move |e| Error::Internal(anyhow::Error::new(e).context(format!("reading {map}")))
}

fn read_processes(
    counts: &impl MapCore,
    names: &impl MapCore,
) -> Result<Vec<ProcessEvents>, Error> {
    let mut out = Vec::new();
    for key in counts.keys() {
        let Some(per_cpu) = counts
            .lookup_percpu(&key, MapFlags::ANY)
            .map_err(map_error("scp_ev_counts"))?
        else {
            continue;
        };
        let mut sum = EventCounts::default();
        for bytes in &per_cpu {
            let c: types::ev_counts = skel::from_bytes(bytes).ok_or_else(|| {
                Error::Internal(anyhow::anyhow!(
                    "scp_ev_counts value is {} bytes",
                    bytes.len()
                ))
            })?;
            sum.add(&EventCounts::from_kernel(&c.n));
        }
        let tgid = key
            .get(..4)
            .and_then(|k| k.try_into().ok())
            .map(u32::from_ne_bytes)
            .ok_or_else(|| {
                Error::Internal(anyhow::anyhow!("scp_ev_counts key is {} bytes", key.len()))
            })?;
        let comm = names
            .lookup(&key, MapFlags::ANY)
            .map_err(map_error("scp_ev_comm"))?
            .map(|raw| {
                let raw: Vec<i8> = raw.iter().map(|&b| b as i8).collect();
                skel::comm_str(&raw)
            })
            .unwrap_or_default();
        out.push(ProcessEvents {
            tgid,
            comm,
            total: sum.total(),
            counts: sum,
        });
    }
    Ok(out)
}

fn summarize(mut procs: Vec<ProcessEvents>, dropped: u64, top: usize) -> Schedevents {
    let mut totals = EventCounts::default();
    for p in &procs {
        totals.add(&p.counts);
    }
    let processes = procs.len();
    procs.sort_by(|a, b| b.total.cmp(&a.total).then(a.tgid.cmp(&b.tgid)));
    procs.truncate(top);
    Schedevents {
        processes,
        dropped,
        totals,
        top: procs,
    }
}

impl Schedevents {
    pub fn render(&self) -> String {
        let mut s = String::new();
        let t = &self.totals;
        let _ = writeln!(
            s,
            "{} processes: {} switches ({} involuntary), {} wakeups, {} new-task wakeups, \
             {} migrations, {} forks, {} execs",
            self.processes,
            t.switches,
            t.involuntary,
            t.wakeups,
            t.wakeups_new,
            t.migrations,
            t.forks,
            t.execs
        );
        if self.dropped > 0 {
            let _ = writeln!(s, "{} events not counted (map full)", self.dropped);
        }
        let _ = writeln!(
            s,
            "{:>8} {:<16} {:>9} {:>9} {:>9} {:>8} {:>8} {:>6} {:>6}",
            "TGID", "COMM", "SWITCH", "INVOL", "WAKEUP", "NEWWAKE", "MIGRATE", "FORK", "EXEC"
        );
        for p in &self.top {
            let c = &p.counts;
            let _ = writeln!(
                s,
                "{:>8} {:<16} {:>9} {:>9} {:>9} {:>8} {:>8} {:>6} {:>6}",
                p.tgid,
                p.comm,
                c.switches,
                c.involuntary,
                c.wakeups,
                c.wakeups_new,
                c.migrations,
                c.forks,
                c.execs
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(tgid: u32, n: [u64; 7]) -> ProcessEvents {
        let counts = EventCounts::from_kernel(&n);
        ProcessEvents {
            tgid,
            comm: format!("p{tgid}"),
            total: counts.total(),
            counts,
        }
    }

    #[test]
    fn totals_exclude_the_involuntary_subset() {
        let c = EventCounts::from_kernel(&[10, 4, 5, 1, 2, 1, 1]);
        assert_eq!(c.total(), 20);
    }

    #[test]
    fn top_is_by_total_and_totals_cover_everyone() {
        let s = summarize(
            vec![
                proc(1, [1, 0, 0, 0, 0, 0, 0]),
                proc(2, [5, 1, 5, 0, 0, 0, 0]),
                proc(3, [2, 0, 0, 0, 0, 0, 0]),
            ],
            0,
            2,
        );
        assert_eq!(s.processes, 3);
        assert_eq!(s.top.iter().map(|p| p.tgid).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(s.totals.switches, 8);
        assert_eq!(s.totals.involuntary, 1);
        assert!(s.render().contains("3 processes"));
    }
}
