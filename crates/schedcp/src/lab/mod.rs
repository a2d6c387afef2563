//! The micro-VM lab: compile a scheduler, pack it with the guest agent into
//! an initramfs, boot a sched_ext kernel under QEMU, and collect the guest's
//! report. Every other service that needs a real sched_ext kernel (verify,
//! tune, the deploy lab node) goes through here.

pub mod compare;
pub mod initramfs;
pub mod kernel;
pub mod qemu;
pub mod report;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use schedcp_proto::job::{GuestJob, PlannedRun, RodataValue, Runner, SchedulerJob};
use schedcp_proto::report::GuestMessage;
use schedcp_proto::workload::WorkloadSpec;
use schedcp_proto::JOB_PATH;
use serde::{Deserialize, Serialize};

use crate::bpf::builtin;
use crate::bpf::compile::{CompileError, CompiledObject, Compiler};
use crate::config::{Accel, Config};
use crate::error::Error;
use kernel::KernelImage;
use qemu::{Accelerator, VmSpec};
use report::{judge, AccelReport, LabReport, StepRecord, Timings};
use sha2::Digest as _;

/// Which scheduler a lab run uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchedulerRef {
    /// The kernel's default scheduler (no sched_ext scheduler attached).
    Default,
    Builtin(String),
    File(PathBuf),
    /// An artefact built earlier (the verifier's object, or an installed
    /// scheduler binary): run exactly these bytes, so what is verified is
    /// what a token is issued for.
    Object {
        name: String,
        path: PathBuf,
        sha256: String,
        runner: Runner,
    },
}

impl SchedulerRef {
    /// `default`, a built-in name, or anything with a `/` or ending in `.c` as a path.
    pub fn parse(s: &str) -> SchedulerRef {
        if s == "default" {
            SchedulerRef::Default
        } else if s.contains('/') || s.ends_with(".c") {
            SchedulerRef::File(PathBuf::from(s))
        } else {
            SchedulerRef::Builtin(s.to_string())
        }
    }

    pub fn label(&self) -> String {
        match self {
            SchedulerRef::Default => "default".into(),
            SchedulerRef::Builtin(n) => n.clone(),
            SchedulerRef::File(p) => p.display().to_string(),
            SchedulerRef::Object { name, .. } => name.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct LabRequest {
    pub policy: SchedulerRef,
    /// `name=value` tunable overrides (built-in policies only).
    pub tunables: Vec<(String, String)>,
    pub workload: WorkloadSpec,
    /// Further runs in the same boot after the main one (see [`GuestJob::then`]).
    pub then: Vec<PlannedRun>,
    /// More schedulers for planned runs ([`PlannedRun::other`]), each with
    /// its tunables: two schedulers compared in one boot.
    pub others: Vec<(SchedulerRef, Vec<(String, String)>)>,
    /// Kernel knob sets for runs ([`GuestJob::knob_sets`]), and the main
    /// run's ([`GuestJob::knobs`]).
    pub knob_sets: Vec<Vec<schedcp_proto::job::KnobWrite>>,
    pub knobs: Option<usize>,
    pub vcpus: u32,
    pub mem_mib: u32,
    /// Wall-clock watchdog for the whole VM, plan included.
    pub timeout: Duration,
    pub accel: Accel,
}

/// Progress events for a caller that shows a bar or logs.
pub enum Progress<'a> {
    Phase(&'a str),
    Guest(&'a GuestMessage),
}

pub struct Lab {
    cfg: Config,
    cache: PathBuf,
}

/// A scheduler ready to ship into the guest.
struct Prepared {
    job: SchedulerJob,
    object: CompiledObject,
}

/// What a previous run learned about KVM on this host, so later runs do not
/// pay for a failed KVM attempt again.
#[derive(Debug, Serialize, Deserialize)]
struct KvmStatus {
    host_kernel: String,
    usable: bool,
    reason: Option<String>,
}

impl Lab {
    pub fn new(cfg: Config) -> Lab {
        let cache = cfg.cache_dir();
        Lab { cfg, cache }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn cache_dir(&self) -> &Path {
        &self.cache
    }

    pub fn kernel(&self) -> Result<KernelImage, Error> {
        kernel::cached(&self.cache).ok_or_else(|| {
            Error::Setup(format!(
                "no sched_ext guest kernel in {}; fetch one with `schedcp lab fetch-kernel` (or run scripts/setup.sh)",
                kernel::kernels_dir(&self.cache).display()
            ))
        })
    }

    pub fn guest_agent(&self) -> Result<PathBuf, Error> {
        let path =
            crate::host::locate_agent(self.cfg.lab.guest_agent.as_deref(), "lab.guest_agent")?;
        check_agent_protocol(&path)?;
        Ok(path)
    }

    fn check_qemu(&self) -> Result<(), Error> {
        crate::host::which(&self.cfg.lab.qemu)
            .map(|_| ())
            .ok_or_else(|| {
                Error::Setup(format!(
                    "{} not found; install qemu-system-x86 (scripts/setup.sh)",
                    self.cfg.lab.qemu
                ))
            })
    }

    /// Compile a scheduler for the lab (no VM involved).
    pub fn compile(
        &self,
        policy: &SchedulerRef,
        tunables: &[(String, String)],
        workdir: &Path,
    ) -> Result<Option<(SchedulerJob, CompiledObject)>, Error> {
        let (name, source, rodata): (String, String, Vec<RodataValue>) = match policy {
            SchedulerRef::Default => {
                if !tunables.is_empty() {
                    return Err(Error::Input(
                        "tunables (--set) need a sched_ext policy; 'default' has none".into(),
                    ));
                }
                return Ok(None);
            }
            SchedulerRef::Builtin(n) => {
                let p = builtin::get(n).map_err(|e| Error::Input(format!("{e:#}")))?;
                let rodata = p
                    .meta
                    .resolve_tunables(tunables)
                    .map_err(|e| Error::Input(format!("{e:#}")))?;
                (p.meta.name.clone(), p.source.to_string(), rodata)
            }
            SchedulerRef::Object {
                name,
                path,
                sha256,
                runner,
            } => {
                let bytes = std::fs::read(path)
                    .map_err(|e| Error::Input(format!("cannot read {}: {e}", path.display())))?;
                let actual = hex::encode(sha2::Sha256::digest(&bytes));
                if &actual != sha256 {
                    return Err(Error::Input(format!(
                        "{} changed since it was verified (sha256 {actual}, expected {sha256})",
                        path.display()
                    )));
                }
                let copy = workdir.join(match runner {
                    Runner::Object => "scheduler.bpf.o",
                    Runner::Binary { .. } => "scheduler.bin",
                });
                std::fs::write(&copy, &bytes)
                    .map_err(|e| Error::Internal(anyhow::anyhow!("copying the object: {e}")))?;
                let object = CompiledObject {
                    path: copy,
                    sha256: actual,
                    size_bytes: bytes.len() as u64,
                    compile_ms: 0.0,
                };
                let job = SchedulerJob {
                    name: name.clone(),
                    object_sha256: object.sha256.clone(),
                    rodata: Vec::new(),
                    runner: runner.clone(),
                    artefact: None,
                };
                return Ok(Some((job, object)));
            }
            SchedulerRef::File(path) => {
                if !tunables.is_empty() {
                    return Err(Error::Input("tunables (--set) are validated against a built-in policy's metadata; a bare .bpf.c file has none".into()));
                }
                let meta = std::fs::metadata(path).map_err(|e| {
                    Error::Input(format!(
                        "cannot read scheduler source {}: {e}",
                        path.display()
                    ))
                })?;
                if !meta.is_file() {
                    return Err(Error::Input(format!(
                        "{} is not a regular file",
                        path.display()
                    )));
                }
                if meta.len() as usize > crate::bpf::compile::MAX_SOURCE_BYTES {
                    return Err(Error::Input(format!(
                        "{} is {} bytes; the limit is {}",
                        path.display(),
                        meta.len(),
                        crate::bpf::compile::MAX_SOURCE_BYTES
                    )));
                }
                let text = std::fs::read_to_string(path).map_err(|e| {
                    Error::Input(format!("cannot read {} as UTF-8 text: {e}", path.display()))
                })?;
                let stem = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("scheduler.bpf.c");
                let stem = stem.trim_end_matches(".c").trim_end_matches(".bpf");
                (stem.to_string(), text, Vec::new())
            }
        };
        if crate::host::which(&self.cfg.lab.clang).is_none() {
            return Err(Error::Setup(format!(
                "{} not found; install clang-19 (scripts/setup.sh)",
                self.cfg.lab.clang
            )));
        }
        let include_dir = crate::bpf::include::include_dir(&self.cache).map_err(Error::Internal)?;
        let compiler = Compiler::new(self.cfg.lab.clang.clone(), include_dir);
        let file_name = crate::host::safe_file_name(&name);
        let object = compiler
            .compile(&format!("{file_name}.bpf.c"), &source, workdir)
            .map_err(|e| match e {
                CompileError::Tool(e) => Error::Setup(format!("{e:#}")),
                other => Error::Compile(other.to_string()),
            })?;
        let job = SchedulerJob {
            name,
            object_sha256: object.sha256.clone(),
            rodata,
            runner: Runner::Object,
            artefact: None,
        };
        Ok(Some((job, object)))
    }

    /// Run one lab job end to end.
    pub fn run(
        &self,
        req: &LabRequest,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Result<LabReport, Error> {
        let started = Instant::now();
        crate::config::check_vm_size(req.vcpus, req.mem_mib, req.timeout.as_secs())
            .map_err(|e| Error::Input(format!("{e:#}")))?;
        self.check_qemu()?;
        let kernel = self.kernel()?;
        let agent = self.guest_agent()?;
        let run_dir = self.new_run_dir().map_err(Error::Internal)?;

        progress(Progress::Phase("compiling scheduler"));
        let prepared = self
            .compile(&req.policy, &req.tunables, &run_dir)?
            .map(|(job, object)| Prepared { job, object });
        if prepared.is_none() && req.then.iter().any(|r| r.scheduler && r.other.is_none()) {
            return Err(Error::Input(
                "a planned run asks for the scheduler, but the job runs the kernel default".into(),
            ));
        }
        let mut others = Vec::new();
        for (i, (policy, tunables)) in req.others.iter().enumerate() {
            let dir = run_dir.join(format!("other-{i}"));
            std::fs::create_dir_all(&dir).map_err(|e| Error::Internal(e.into()))?;
            let Some((mut job, object)) = self.compile(policy, tunables, &dir)? else {
                return Err(Error::Input(
                    "the kernel default is not an `other` scheduler; plan it as a run without one"
                        .into(),
                ));
            };
            let ext = match job.runner {
                Runner::Object => "bpf.o",
                Runner::Binary { .. } => "bin",
            };
            job.artefact = Some(format!("/schedcp/other-{i}.{ext}"));
            others.push(Prepared { job, object });
        }
        if let Some(r) = req
            .then
            .iter()
            .find(|r| r.other.is_some_and(|i| i >= others.len()))
        {
            return Err(Error::Input(format!(
                "a planned run asks for other scheduler {:?}, but the job has {}",
                r.other,
                others.len()
            )));
        }

        if let Some(r) = req
            .then
            .iter()
            .find(|r| r.knobs.is_some_and(|i| i >= req.knob_sets.len()))
        {
            return Err(Error::Input(format!(
                "a planned run asks for knob set {:?}, but the job has {}",
                r.knobs,
                req.knob_sets.len()
            )));
        }
        progress(Progress::Phase("building initramfs"));
        let t = Instant::now();
        let job = GuestJob {
            scheduler: prepared.as_ref().map(|p| p.job.clone()),
            workload: req.workload.clone(),
            then: req.then.clone(),
            others: others.iter().map(|p| p.job.clone()).collect(),
            knob_sets: req.knob_sets.clone(),
            knobs: req.knobs,
            state_timeout_ms: 10_000,
        };
        let initrd = run_dir.join("initramfs.cpio");
        self.build_initramfs(
            &agent,
            &kernel,
            &job,
            prepared.as_ref().map(|p| p.object.path.as_path()),
            &others,
            &initrd,
        )
        .map_err(Error::Internal)?;
        let initramfs_ms = t.elapsed().as_secs_f64() * 1e3;

        let (accel, mut kvm_unavailable) = self.choose_accel(req.accel)?;
        let mut messages = Vec::new();
        let mut vm = self.boot(
            &kernel,
            &initrd,
            &run_dir,
            req,
            accel,
            &mut messages,
            progress,
        )?;
        let mut used = accel;
        if let Some(reason) = vm.kvm_failure.take() {
            // Only reachable with accel=auto: remember and retry on TCG.
            self.remember_kvm(false, Some(reason.clone()));
            progress(Progress::Phase("KVM failed; retrying under TCG"));
            kvm_unavailable = Some(reason);
            messages.clear();
            used = Accelerator::Tcg;
            vm = self.boot(
                &kernel,
                &initrd,
                &run_dir,
                req,
                used,
                &mut messages,
                progress,
            )?;
        } else if accel == Accelerator::Kvm && !vm.timed_out && req.accel == Accel::Auto {
            self.remember_kvm(true, None);
        }

        let mut steps = Vec::new();
        let mut boot_to_agent = None;
        let mut guest = None;
        let mut workload_ms = None;
        let mut then = Vec::new();
        for m in messages {
            match m {
                GuestMessage::Hello { uptime_s, .. } => boot_to_agent = Some(uptime_s),
                GuestMessage::Step {
                    step,
                    ok,
                    elapsed_ms,
                    detail,
                    ..
                } => {
                    if step == schedcp_proto::report::StepKind::Workload && workload_ms.is_none() {
                        workload_ms = Some(elapsed_ms);
                    }
                    steps.push(StepRecord {
                        step,
                        ok,
                        elapsed_ms,
                        detail,
                    });
                }
                GuestMessage::Run { record, .. } => then.push(*record),
                GuestMessage::Done(r) => guest = Some(*r),
            }
        }
        let crash = qemu::kernel_crash(&run_dir.join("console.log"));
        let mut outcome = judge(
            guest.as_ref(),
            vm.timed_out.then_some(req.timeout.as_secs()),
            crash,
        );
        if vm.output_limit && guest.is_none() {
            outcome = report::Outcome::Failed {
                reason: format!(
                    "the guest wrote more than {} MiB to its console or report port, so QEMU was \
                     stopped there (RLIMIT_FSIZE)",
                    qemu::MAX_GUEST_OUTPUT_BYTES >> 20
                ),
            };
        }
        let keep = self.cfg.lab.keep_runs || outcome != report::Outcome::Completed;
        if vm.status.is_some_and(|s| !s.success()) && guest.is_none() {
            tracing::warn!("QEMU exited with {:?}: {}", vm.status, vm.stderr.trim());
        }
        Ok(LabReport {
            policy: req.policy.label(),
            workload: req.workload.clone(),
            kernel_release: kernel.release.clone(),
            accel: AccelReport {
                used: used.name().into(),
                kvm_unavailable,
                clock: match used {
                    Accelerator::Kvm => "host".into(),
                    Accelerator::Tcg => self.cfg.lab.clock.name(),
                },
            },
            vcpus: req.vcpus,
            mem_mib: req.mem_mib,
            outcome,
            timings: Timings {
                compile_ms: prepared.as_ref().map(|p| p.object.compile_ms),
                initramfs_ms,
                boot_to_agent_s: boot_to_agent,
                boot_to_attach_s: guest.as_ref().and_then(|g| g.boot_to_attach_s),
                workload_ms,
                vm_wall_s: vm.elapsed.as_secs_f64(),
                total_s: started.elapsed().as_secs_f64(),
            },
            object: prepared.map(|p| p.object),
            steps,
            guest,
            then,
            run_dir: keep.then_some(run_dir),
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn boot(
        &self,
        kernel: &KernelImage,
        initrd: &Path,
        run_dir: &Path,
        req: &LabRequest,
        accel: Accelerator,
        messages: &mut Vec<GuestMessage>,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Result<qemu::VmExit, Error> {
        progress(Progress::Phase(match accel {
            Accelerator::Kvm => "booting VM (kvm)",
            Accelerator::Tcg => "booting VM (tcg)",
        }));
        let spec = VmSpec {
            qemu: &self.cfg.lab.qemu,
            tcg_threads: self.cfg.lab.tcg_threads,
            clock: self.cfg.lab.clock,
            kernel: &kernel.vmlinuz,
            initrd,
            vcpus: req.vcpus,
            mem_mib: req.mem_mib,
            accel,
            report_path: run_dir.join("report.jsonl"),
            console_path: run_dir.join("console.log"),
            timeout: req.timeout,
            extra_args: Vec::new(),
        };
        qemu::boot(&spec, &mut |m: GuestMessage| {
            progress(Progress::Guest(&m));
            messages.push(m);
        })
        .map_err(Error::Internal)
    }

    fn build_initramfs(
        &self,
        agent: &Path,
        kernel: &KernelImage,
        job: &GuestJob,
        object: Option<&Path>,
        others: &[Prepared],
        out: &Path,
    ) -> anyhow::Result<()> {
        let mut fs = initramfs::Initramfs::new();
        fs.add_host_file("/init", agent, 0o755)?;
        let agent_libs = initramfs::shared_libraries(agent)?;
        for lib in &agent_libs {
            fs.add_host_file(&lib.display().to_string(), lib, 0o755)?;
        }
        // libbpf resolves Kconfig externs from /boot/config-$(uname -r).
        fs.add_host_file(
            &format!("/boot/config-{}", kernel.release),
            &kernel.config,
            0o644,
        )?;
        fs.add_file(JOB_PATH, 0o644, &serde_json::to_vec_pretty(job)?);
        let mut artefacts: Vec<(&SchedulerJob, &Path)> = Vec::new();
        if let (Some(job), Some(obj)) = (&job.scheduler, object) {
            artefacts.push((job, obj));
        }
        artefacts.extend(others.iter().map(|p| (&p.job, p.object.path.as_path())));
        let mut libs = agent_libs;
        for (job, path) in artefacts {
            match job.runner {
                Runner::Binary { .. } => {
                    fs.add_host_file(job.artefact_path(), path, 0o755)?;
                    for lib in initramfs::shared_libraries(path)? {
                        if !libs.contains(&lib) {
                            fs.add_host_file(&lib.display().to_string(), &lib, 0o755)?;
                            libs.push(lib);
                        }
                    }
                }
                Runner::Object => fs.add_host_file(job.artefact_path(), path, 0o644)?,
            }
        }
        fs.write_to(out)
    }

    /// The accelerator the configuration asks for, as this host can give it.
    pub fn accelerator(&self) -> Result<Accelerator, Error> {
        self.choose_accel(self.cfg.lab.accel).map(|(a, _)| a)
    }

    fn choose_accel(&self, want: Accel) -> Result<(Accelerator, Option<String>), Error> {
        match want {
            Accel::Tcg => Ok((Accelerator::Tcg, Some("TCG requested".into()))),
            Accel::Kvm => match qemu::kvm_device_usable() {
                Ok(()) => Ok((Accelerator::Kvm, None)),
                Err(e) => Err(Error::Setup(format!(
                    "KVM requested but unusable: {e}; use --accel tcg or auto"
                ))),
            },
            Accel::Auto => {
                if let Err(e) = qemu::kvm_device_usable() {
                    return Ok((Accelerator::Tcg, Some(e)));
                }
                match self.known_kvm_status() {
                    Some(KvmStatus {
                        usable: false,
                        reason,
                        ..
                    }) => Ok((
                        Accelerator::Tcg,
                        Some(reason.unwrap_or_else(|| "KVM failed on an earlier run".into())),
                    )),
                    _ => Ok((Accelerator::Kvm, None)),
                }
            }
        }
    }

    fn kvm_status_path(&self) -> PathBuf {
        self.cache.join("kvm-status.json")
    }

    fn known_kvm_status(&self) -> Option<KvmStatus> {
        let s: KvmStatus =
            serde_json::from_slice(&std::fs::read(self.kvm_status_path()).ok()?).ok()?;
        (s.host_kernel == crate::host::kernel_release()).then_some(s)
    }

    pub(crate) fn remember_kvm(&self, usable: bool, reason: Option<String>) {
        let s = KvmStatus {
            host_kernel: crate::host::kernel_release(),
            usable,
            reason,
        };
        if let Ok(b) = serde_json::to_vec_pretty(&s) {
            let _ = std::fs::write(self.kvm_status_path(), b);
        }
    }

    /// What earlier runs learned about KVM here, for `doctor`.
    pub fn kvm_runtime_status(&self) -> Option<(bool, Option<String>)> {
        self.known_kvm_status().map(|s| (s.usable, s.reason))
    }

    fn new_run_dir(&self) -> anyhow::Result<PathBuf> {
        let runs = self.cache.join("runs");
        std::fs::create_dir_all(&runs).with_context(|| format!("creating {}", runs.display()))?;
        prune_runs(&runs, 20);
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}-", stamp.as_secs()))
            .tempdir_in(&runs)?;
        Ok(dir.keep())
    }
}

/// A guest agent from another build would misread the job or the host its
/// report; ask it for its protocol fingerprint first.
fn check_agent_protocol(agent: &Path) -> Result<(), Error> {
    let out = std::process::Command::new(agent)
        .arg(schedcp_proto::PROTOCOL_FLAG)
        .output()
        .map_err(|e| Error::Setup(format!("cannot run guest agent {}: {e}", agent.display())))?;
    let theirs = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if theirs != schedcp_proto::PROTOCOL_FINGERPRINT {
        return Err(Error::Setup(format!(
            "guest agent {} speaks protocol {:?} but this schedcp speaks {}: it is from another build; rebuild both with `cargo build --release --workspace`",
            agent.display(),
            theirs,
            schedcp_proto::PROTOCOL_FINGERPRINT
        )));
    }
    Ok(())
}

/// Keep only the newest `keep` run directories.
fn prune_runs(runs: &Path, keep: usize) {
    let Ok(rd) = std::fs::read_dir(runs) else {
        return;
    };
    let mut dirs: Vec<_> = rd
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.path())
        .collect();
    dirs.sort();
    let excess = dirs.len().saturating_sub(keep);
    for d in dirs.into_iter().take(excess) {
        let _ = std::fs::remove_dir_all(d);
    }
}
