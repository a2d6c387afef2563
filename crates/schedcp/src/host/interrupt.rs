//! Ctrl-C and SIGTERM as a request, not a death: long work that changed
//! the machine (a knob trial) checks [`requested`] between steps and puts
//! everything back before it exits. A second signal is not special: the
//! work still finishes its restore.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    REQUESTED.store(true, Ordering::SeqCst);
}

/// Route SIGINT and SIGTERM to the flag for the rest of the process.
pub fn install() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let act = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe).
        let _ = unsafe { sigaction(sig, &act) };
    }
}

/// Whether an interrupt arrived since [`install`], or the API job this
/// thread works for was cancelled.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst) || job_cancelled()
}

thread_local! {
    /// The cancel flag of the API job this thread works for, if any.
    static JOB: std::cell::RefCell<Option<std::sync::Arc<AtomicBool>>> =
        const { std::cell::RefCell::new(None) };
}

/// Make `flag` this thread's job-cancel flag (a job's thread, or a helper
/// thread it started: pass [`job_flag`] on).
pub fn adopt(flag: Option<std::sync::Arc<AtomicBool>>) {
    JOB.with(|j| *j.borrow_mut() = flag);
}

/// This thread's job-cancel flag, to hand to threads it starts.
pub fn job_flag() -> Option<std::sync::Arc<AtomicBool>> {
    JOB.with(|j| j.borrow().clone())
}

/// Whether the API job this thread works for was cancelled (`job_cancel`).
/// The process supervisor kills what it runs when this turns true.
pub fn job_cancelled() -> bool {
    JOB.with(|j| {
        j.borrow()
            .as_ref()
            .is_some_and(|f| f.load(Ordering::SeqCst))
    })
}
