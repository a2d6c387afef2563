//! The cputime probe (bpf/probes/cputime.bpf.c): per-task on-CPU and
//! off-CPU time within the window.

use std::fmt::Write as _;
use std::mem::MaybeUninit;
use std::os::fd::AsFd;

use libbpf_rs::{MapCore, MapFlags};
use serde::Serialize;

use super::request::Filter;
use super::session::Attached;
use super::skel::{self, cputime::*};
use crate::error::Error;

const NAME: &str = "cputime";

/// One task's time within the window.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct TaskTime {
    pub pid: u32,
    pub tgid: u32,
    pub comm: String,
    pub on_cpu_ms: f64,
    /// Sleeping or waiting on a run queue.
    pub off_cpu_ms: f64,
    /// Share of the window spent on a CPU, in percent.
    pub on_cpu_pct: f64,
    /// Times switched in.
    pub switches: u32,
    /// Switched out while still runnable (preempted or yielded).
    pub involuntary: u32,
    /// Exited during the window.
    pub exited: bool,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Cputime {
    pub window_ms: f64,
    /// Tasks seen switching in or out.
    pub tasks: usize,
    /// Tasks not tracked because the map was full.
    pub dropped: u64,
    /// Switch-ins counted over all tasks.
    pub switches: u64,
    pub on_cpu_ms_total: f64,
    /// The busiest tasks by on-CPU time.
    pub top: Vec<TaskTime>,
}

/// Loads and attaches the probe, runs `during` while attached, detaches,
/// and reads the per-task times, keeping the `top` busiest.
pub(super) fn observe<R>(
    filter: &Filter,
    top: usize,
    during: impl FnOnce(&Attached) -> R,
) -> Result<(Cputime, R), Error> {
    let mut object = MaybeUninit::uninit();
    let mut probe = skel::open_load_attach::<ScpCputimeSkelBuilder>(NAME, &mut object, |open| {
        skel::set_filter(open.maps.rodata_data.as_deref_mut(), filter)
    })?;
    let attached = Attached::new(&[probe.progs.scp_cpu_switch.as_fd()])?;
    // The window opens once the program is live and closes before it is
    // detached (see cputime.bpf.c for why).
    let start_ns = monotonic_ns()?;
    window(&mut probe)?.window_start_ns = start_ns;
    let out = during(&attached);
    let end_ns = monotonic_ns()?;
    window(&mut probe)?.window_end_ns = end_ns;
    probe.links = ScpCputimeLinks::default();
    let dropped = window(&mut probe)?.dropped;
    let tasks = read_tasks(&probe.maps.scp_cpu_tasks)?;
    Ok((summarize(tasks, start_ns, end_ns, dropped, top), out))
}

/// The probe's `.bss`: its window bounds and drop counter.
fn window<'a>(probe: &'a mut ScpCputimeSkel<'_>) -> Result<&'a mut types::bss, Error> {
    probe
        .maps
        .bss_data
        .as_deref_mut()
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("cputime probe has no .bss")))
}

/// CLOCK_MONOTONIC in ns: the clock of bpf_ktime_get_ns and of
/// task_struct::start_time.
fn monotonic_ns() -> Result<u64, Error> {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map_err(|e| Error::Internal(anyhow::Error::new(e).context("reading CLOCK_MONOTONIC")))?;
    Ok(t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
}

fn read_tasks(map: &impl MapCore) -> Result<Vec<(u32, types::cpu_task)>, Error> {
    let mut out = Vec::new();
    for key in map.keys() {
        let Some(bytes) = map
            .lookup(&key, MapFlags::ANY)
            .map_err(|e| Error::Internal(anyhow::Error::new(e).context("reading scp_cpu_tasks")))?
        else {
            continue;
        };
        let (Some(pid), Some(task)) = (
            key.get(..4)
                .and_then(|k| k.try_into().ok())
                .map(u32::from_ne_bytes),
            skel::from_bytes::<types::cpu_task>(&bytes),
        ) else {
            return Err(Error::Internal(anyhow::anyhow!(
                "scp_cpu_tasks entry has {} key and {} value bytes",
                key.len(),
                bytes.len()
            )));
        };
        out.push((pid, task));
    }
    Ok(out)
}

fn summarize(
    tasks: Vec<(u32, types::cpu_task)>,
    start_ns: u64,
    end_ns: u64,
    dropped: u64,
    top: usize,
) -> Cputime {
    let window_ns = end_ns.saturating_sub(start_ns).max(1);
    let ms = |ns: u64| ns as f64 / 1e6;
    let mut rows: Vec<(u64, TaskTime)> = tasks
        .into_iter()
        .map(|(pid, t)| {
            let (mut on, mut off) = (t.on_ns, t.off_ns);
            // Close the interval still open when the window ended.
            if t.dead == 0 {
                let open = end_ns.saturating_sub(t.last_ns);
                if t.on_cpu != 0 {
                    on += open;
                } else {
                    off += open;
                }
            }
            let row = TaskTime {
                pid,
                tgid: t.tgid,
                comm: skel::comm_str(&t.comm),
                on_cpu_ms: ms(on),
                off_cpu_ms: ms(off),
                on_cpu_pct: 100.0 * on as f64 / window_ns as f64,
                switches: t.switches,
                involuntary: t.involuntary,
                exited: t.dead != 0,
            };
            (on, row)
        })
        .collect();
    let count = rows.len();
    let switches = rows.iter().map(|(_, r)| u64::from(r.switches)).sum();
    let on_total: u64 = rows.iter().map(|(on, _)| on).sum();
    rows.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.pid.cmp(&b.1.pid)));
    rows.truncate(top);
    Cputime {
        window_ms: ms(window_ns),
        tasks: count,
        dropped,
        switches,
        on_cpu_ms_total: ms(on_total),
        top: rows.into_iter().map(|(_, r)| r).collect(),
    }
}

impl Cputime {
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{} tasks, {} switch-ins, {:.1} ms on CPU in total over {:.1} ms",
            self.tasks, self.switches, self.on_cpu_ms_total, self.window_ms
        );
        if self.dropped > 0 {
            let _ = writeln!(s, "{} tasks not tracked (map full)", self.dropped);
        }
        let _ = writeln!(
            s,
            "{:>8} {:>8} {:<16} {:>10} {:>6} {:>10} {:>8} {:>8}",
            "PID", "TGID", "COMM", "ON ms", "ON %", "OFF ms", "SWITCH", "INVOL"
        );
        for t in &self.top {
            let _ = writeln!(
                s,
                "{:>8} {:>8} {:<16} {:>10.1} {:>6.1} {:>10.1} {:>8} {:>8}{}",
                t.pid,
                t.tgid,
                t.comm,
                t.on_cpu_ms,
                t.on_cpu_pct,
                t.off_cpu_ms,
                t.switches,
                t.involuntary,
                if t.exited { "  (exited)" } else { "" }
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(on: u64, off: u64, last: u64, on_cpu: u8, dead: u8) -> types::cpu_task {
        let mut comm = [0i8; 16];
        comm[0] = b'x' as i8;
        types::cpu_task {
            on_ns: on,
            off_ns: off,
            last_ns: last,
            tgid: 1,
            switches: 2,
            involuntary: 1,
            on_cpu,
            dead,
            comm,
            ..Default::default()
        }
    }

    #[test]
    fn open_intervals_are_closed_at_the_window_end() {
        // Window 1000..2000 ns. Task 10 went on CPU at 1500 and stayed;
        // task 11 went off at 1800; task 12 exited at 1200.
        let c = summarize(
            vec![
                (10, task(100, 400, 1500, 1, 0)),
                (11, task(300, 500, 1800, 0, 0)),
                (12, task(200, 0, 1200, 0, 1)),
            ],
            1000,
            2000,
            0,
            2,
        );
        assert_eq!(c.tasks, 3);
        assert_eq!(c.top.len(), 2);
        assert_eq!(c.top[0].pid, 10);
        assert!((c.top[0].on_cpu_ms - 600e-6).abs() < 1e-12);
        assert!((c.top[0].on_cpu_pct - 60.0).abs() < 1e-9);
        assert_eq!(c.top[1].pid, 11);
        assert!((c.top[1].off_cpu_ms - 700e-6).abs() < 1e-12);
        assert!((c.on_cpu_ms_total - 1100e-6).abs() < 1e-12);
        assert_eq!(c.switches, 6);
        assert!(c.render().contains("3 tasks"));
    }
}
