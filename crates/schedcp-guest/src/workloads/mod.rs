//! Built-in lab workloads (filled by the workloads work item).
