//! Thread plumbing shared by the workloads: futexes, a cancellable start gate,
//! and spawn/join helpers that turn failures into errors instead of hangs.

use std::any::Any;
use std::io;
use std::ptr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::{self, Scope, ScopedJoinHandle};

use anyhow::{anyhow, Context, Result};

/// Sleeps while `*word == expected`. Spurious returns are fine (callers
/// re-check), so `EAGAIN` (value already changed) and `EINTR` count as success.
pub fn futex_wait(word: &AtomicU32, expected: u32) -> io::Result<()> {
    // SAFETY: `word` is a live, aligned u32 for the whole call; a null timeout
    // means no timeout, and the remaining futex arguments are ignored.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            ptr::null::<libc::timespec>(),
        )
    };
    if ret == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EAGAIN | libc::EINTR) => Ok(()),
        _ => Err(err),
    }
}

/// Wakes up to `count` threads sleeping on `word`.
pub fn futex_wake(word: &AtomicU32, count: i32) -> io::Result<()> {
    // SAFETY: as in `futex_wait`; FUTEX_WAKE only uses the address and count.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            count,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

const CLOSED: u32 = 0;
const OPEN: u32 = 1;
const ABORTED: u32 = 2;

/// A start line. Unlike `std::sync::Barrier` it can be aborted, so a failure
/// to spawn the 900th thread doesn't leave the first 899 waiting forever, and
/// the releasing thread can take its timestamp right before the release.
#[derive(Debug, Default)]
pub struct Gate {
    state: AtomicU32,
    arrived: AtomicU32,
}

impl Gate {
    pub fn new() -> Self {
        Self::default()
    }

    /// Announces that the calling thread is ready, without waiting.
    pub fn arrive(&self) -> io::Result<()> {
        self.arrived.fetch_add(1, Ordering::Release);
        futex_wake(&self.arrived, 1)
    }

    /// Arrives, then sleeps until the gate opens. `Ok(false)`: it was aborted
    /// and the caller should return without doing its work.
    pub fn wait(&self) -> io::Result<bool> {
        self.arrive()?;
        loop {
            match self.state.load(Ordering::Acquire) {
                CLOSED => futex_wait(&self.state, CLOSED)?,
                state => return Ok(state == OPEN),
            }
        }
    }

    /// Blocks until `count` threads have arrived, so that releasing the gate
    /// wakes sleeping threads rather than racing their startup.
    pub fn await_arrivals(&self, count: usize) -> io::Result<()> {
        loop {
            let arrived = self.arrived.load(Ordering::Acquire);
            if arrived as usize >= count {
                return Ok(());
            }
            futex_wait(&self.arrived, arrived)?;
        }
    }

    pub fn release(&self) -> io::Result<()> {
        self.state.store(OPEN, Ordering::Release);
        futex_wake(&self.state, i32::MAX)
    }

    /// Sends every waiter home. A no-op once the gate is open, so it is safe
    /// as unconditional cleanup.
    pub fn abort(&self) {
        if self
            .state
            .compare_exchange(CLOSED, ABORTED, Ordering::Release, Ordering::Relaxed)
            .is_ok()
        {
            // Only EFAULT/EINVAL are possible, and this is already a cleanup path.
            let _ = futex_wake(&self.state, i32::MAX);
        }
    }
}

/// Runs a closure when dropped, including during unwinding: the cleanup that
/// keeps one failed thread from leaving the others blocked forever.
pub struct OnExit<F: FnOnce()>(Option<F>);

impl<F: FnOnce()> OnExit<F> {
    pub fn new(f: F) -> Self {
        OnExit(Some(f))
    }

    /// Skips the closure: the guarded code finished normally.
    pub fn disarm(mut self) {
        self.0 = None;
    }
}

impl<F: FnOnce()> Drop for OnExit<F> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

/// Workload threads are shallow; small stacks keep thousands of them cheap in
/// a small VM.
const STACK_SIZE: usize = 256 << 10;

/// Spawns a named scoped thread; running out of threads is an error, not a panic.
pub fn spawn<'scope, T, F>(
    scope: &'scope Scope<'scope, '_>,
    name: String,
    f: F,
) -> Result<ScopedJoinHandle<'scope, T>>
where
    F: FnOnce() -> T + Send + 'scope,
    T: Send + 'scope,
{
    thread::Builder::new()
        .name(name.clone())
        .stack_size(STACK_SIZE)
        .spawn_scoped(scope, f)
        .with_context(|| format!("spawning thread {name}"))
}

/// Joins every handle, even after a failure, and returns all results or the
/// first error (a panic becomes an error too).
pub fn join_all<T>(handles: Vec<ScopedJoinHandle<'_, Result<T>>>) -> Result<Vec<T>> {
    let mut values = Vec::with_capacity(handles.len());
    let mut first_err = None;
    for handle in handles {
        let name = handle.thread().name().unwrap_or("unnamed").to_owned();
        let err = match handle.join() {
            Ok(Ok(value)) => {
                values.push(value);
                continue;
            }
            Ok(Err(e)) => e.context(format!("thread {name}")),
            Err(panic) => anyhow!("thread {name} panicked: {}", panic_message(&*panic)),
        };
        first_err.get_or_insert(err);
    }
    match first_err {
        Some(err) => Err(err),
        None => Ok(values),
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "non-string payload"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_releases_all_waiters() {
        let gate = Gate::new();
        let passed = thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|i| spawn(s, format!("t{i}"), || Ok(gate.wait()?)).unwrap())
                .collect();
            gate.await_arrivals(4).unwrap();
            gate.release().unwrap();
            gate.abort(); // no effect once open
            join_all(handles).unwrap()
        });
        assert_eq!(passed, vec![true; 4]);
    }

    #[test]
    fn aborted_gate_sends_waiters_home() {
        let gate = Gate::new();
        let passed = thread::scope(|s| {
            let handles: Vec<_> = (0..3)
                .map(|i| spawn(s, format!("t{i}"), || Ok(gate.wait()?)).unwrap())
                .collect();
            gate.await_arrivals(3).unwrap();
            gate.abort();
            join_all(handles).unwrap()
        });
        assert_eq!(passed, vec![false; 3]);
        // Late arrivals see the abort too.
        assert!(!gate.wait().unwrap());
    }

    #[test]
    fn join_all_reports_errors_and_panics() {
        let err = thread::scope(|s| {
            let handles = vec![
                spawn(s, "ok".into(), || Ok(1)).unwrap(),
                spawn(s, "bad".into(), || Err(anyhow!("boom"))).unwrap(),
                spawn(s, "panicky".into(), || -> Result<i32> { panic!("oops") }).unwrap(),
            ];
            join_all(handles).unwrap_err()
        });
        assert!(format!("{err:#}").contains("thread bad: boom"), "{err:#}");
    }

    #[test]
    fn on_exit_runs_unless_disarmed() {
        let hits = AtomicU32::new(0);
        drop(OnExit::new(|| {
            hits.fetch_add(1, Ordering::Relaxed);
        }));
        OnExit::new(|| {
            hits.fetch_add(10, Ordering::Relaxed);
        })
        .disarm();
        assert_eq!(hits.load(Ordering::Relaxed), 1);
    }
}
