//! Which processes an API caller may point a root profiler or a probe at.
//! Never pid 1, never the daemon or anything it started (the supervised
//! scheduler, lab VMs, compiles); and, when configured, only processes of
//! the allowed uids and cgroups.

use super::error::{ApiError, Code};
use crate::config::ApiConfig;

/// The refusal, precise, for `pid`; `Ok` if it may be a target.
pub fn check(api: &ApiConfig, pid: u32) -> Result<(), ApiError> {
    let forbid = |why: String| Err(ApiError::new(Code::Forbidden, why));
    if pid <= 1 {
        return forbid(format!(
            "pid {pid} may not be profiled or probed over the API"
        ));
    }
    let proc = procfs::process::Process::new(pid as i32)
        .map_err(|_| ApiError::new(Code::NotFound, format!("no process {pid}")))?;
    let me = std::process::id();
    // Walk up: the daemon itself or any of its descendants is refused.
    let mut at = pid;
    for _ in 0..64 {
        if at == me {
            return forbid(format!(
                "pid {pid} is schedcp's own daemon or one of its children (a scheduler, a lab VM, a compile); it may not be a target"
            ));
        }
        match procfs::process::Process::new(at as i32).and_then(|p| p.stat()) {
            Ok(st) if st.ppid > 1 => at = st.ppid as u32,
            _ => break,
        }
    }
    if !api.observe_uids.is_empty() {
        let uid = proc
            .uid()
            .map_err(|e| ApiError::new(Code::NotFound, format!("process {pid}: {e}")))?;
        if !api.observe_uids.contains(&uid) {
            return forbid(format!(
                "pid {pid} runs as uid {uid}, which is not in api.observe_uids"
            ));
        }
    }
    if !api.observe_cgroups.is_empty() {
        let paths: Vec<String> = proc
            .cgroups()
            .map(|cg| cg.into_iter().map(|c| c.pathname).collect())
            .unwrap_or_default();
        if !paths.iter().any(|p| {
            api.observe_cgroups
                .iter()
                .any(|allowed| p.starts_with(allowed))
        }) {
            return forbid(format!(
                "pid {pid} is in cgroup(s) {} and none is under api.observe_cgroups",
                paths.join(", ")
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_1_the_daemon_and_its_children_are_refused() {
        let api = ApiConfig::default();
        assert!(check(&api, 1).unwrap_err().message.contains("pid 1"));
        let me = std::process::id();
        assert!(check(&api, me).unwrap_err().message.contains("own daemon"));
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let e = check(&api, child.id()).unwrap_err();
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(e.code, Code::Forbidden);
        assert_eq!(check(&api, u32::MAX - 1).unwrap_err().code, Code::NotFound);
        let only_nobody = ApiConfig {
            observe_uids: vec![65534],
            ..ApiConfig::default()
        };
        // The test's parent (cargo) runs as this uid, not 65534.
        let parent = nix::unistd::getppid().as_raw() as u32;
        if nix::unistd::getuid().as_raw() != 65534 {
            assert!(check(&only_nobody, parent)
                .unwrap_err()
                .message
                .contains("api.observe_uids"));
        }
    }
}
