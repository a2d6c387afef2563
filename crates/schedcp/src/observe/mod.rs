//! observe — the workload analysis engine (layered summaries, the eBPF probe
//! library, sandboxed profilers, workload profiles and the benchmark feedback
//! channel). Not built yet: see the observe issue. The lab workloads in the
//! guest agent are its first measuring instruments.
