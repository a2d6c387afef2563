//! The controller's side of knob change sets in force: checking them for
//! an operator's hand, sweeping workloads for new processes, and putting
//! them back after a reboot.

use std::time::{Duration, Instant};

use super::Controller;
use crate::deploy::record;
use crate::knobs::Applied;

/// How often managed knobs are compared with what schedcp wrote, and
/// workloads swept: a file read per knob, a /proc scan per workload.
const KNOB_CHECK: Duration = Duration::from_secs(1);

impl Controller {
    /// Compare every managed knob with what schedcp wrote; release the ones
    /// an operator changed (never written again, not even by a rollback),
    /// and bring new processes of per-workload change sets under them.
    pub(in crate::deploy) fn check_knobs(&mut self) {
        if Instant::now() < self.next_knob_check {
            return;
        }
        self.next_knob_check = Instant::now() + KNOB_CHECK;
        self.check_in_force("while managed");
    }

    /// One pass over the change sets in force, newest first: drift
    /// (a newer change owns a knob it shares with an older one), then the
    /// workload sweep, each change set saved when it changed.
    fn check_in_force(&mut self, when: &str) {
        let Ok(chain) = record::in_force(&self.store) else {
            return;
        };
        let mut claimed = std::collections::BTreeSet::new();
        for d in chain {
            let Some(mut k) = d.knobs else {
                continue;
            };
            let drifted: Vec<_> = k
                .drift()
                .into_iter()
                .filter(|x| !claimed.contains(&x.knob))
                .collect();
            claimed.extend(k.plan.knob_names());
            for x in &drifted {
                k.release(x);
                self.event(
                    Some(d.id),
                    "operator_override",
                    &format!(
                        "{} was changed by hand {when}: schedcp wrote {}, it is now {}; schedcp no longer manages it and will not write it again, not even on rollback",
                        x.knob, x.expected, x.found
                    ),
                );
            }
            if !drifted.is_empty() {
                if let Err(e) = record::save_knobs(&mut self.store, d.id, &k) {
                    tracing::error!("recording released knobs: {e}");
                }
            }
            // A change set not yet applied (no boot id) has no processes.
            if k.plan.workloads.is_empty() || k.boot_id.is_empty() {
                continue;
            }
            let store = &mut self.store;
            let mut persist = |a: &Applied| record::save_knobs(store, d.id, a);
            match k.sweep(&mut persist) {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    deployment = d.id,
                    "{n} new workload threads under the change set"
                ),
                Err(e) => tracing::warn!(deployment = d.id, "sweeping workloads: {e}"),
            }
        }
    }

    /// The spawn hook of the newest change set in force that manages
    /// `workload`'s processes.
    pub(in crate::deploy) fn spawn_hook(&self, workload: &str) -> Option<crate::knobs::SpawnHook> {
        record::in_force(&self.store)
            .ok()?
            .into_iter()
            .filter_map(|d| d.knobs)
            .find_map(|k| k.spawn_hook(workload).ok().flatten())
    }

    /// At start: change sets applied in an earlier boot are written again
    /// (the kernel forgot them); in this boot, drift is an operator's.
    pub(in crate::deploy) fn reconcile_knobs(&mut self) {
        let Ok(chain) = record::in_force(&self.store) else {
            return;
        };
        let boot = crate::knobs::boot_id();
        for d in chain.into_iter().rev() {
            let Some(mut k) = d.knobs.clone() else {
                continue;
            };
            if k.boot_id == boot {
                continue;
            }
            let store = &mut self.store;
            let mut persist = |a: &Applied| record::save_knobs(store, d.id, a);
            k.boot_id = boot.clone();
            match k.reapply(&mut persist) {
                Ok(()) => self.event(
                    Some(d.id),
                    "knobs_reapplied",
                    &format!("after a reboot: {}", k.plan.describe()),
                ),
                Err(e) => self.event(
                    Some(d.id),
                    "restore_failed",
                    &format!("re-applying knobs after a reboot failed: {e}"),
                ),
            }
        }
        self.check_in_force("while the daemon was down");
    }
}
