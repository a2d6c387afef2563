//! Kernel memory a map will pin, estimated from its definition the way the
//! kernel allocates it (element headers, 8-byte value rounding, one value
//! copy per possible CPU for per-CPU maps). Estimates, not exact figures:
//! good enough to catch a map that would eat the machine.

use libbpf_sys as sys;

use super::{Limits, MapInfo};

/// `struct htab_elem` header + hash bucket share, bytes.
const HTAB_ELEM_OVERHEAD: u64 = 48;
/// Local-storage element header (`struct bpf_local_storage_elem` and the
/// owner's storage), bytes.
const LOCAL_STORAGE_OVERHEAD: u64 = 64;
const PAGE: u64 = 4096;

fn round8(n: u64) -> u64 {
    n.div_ceil(8) * 8
}

/// Estimated bytes for one map definition; saturates instead of overflowing.
pub fn estimate(ty: u32, key: u64, value: u64, entries: u64, limits: &Limits) -> u64 {
    let cpus = limits.possible_cpus.max(1);
    let (k, v) = (round8(key), round8(value));
    let est: u128 = match ty {
        sys::BPF_MAP_TYPE_ARRAY => u128::from(entries) * u128::from(v),
        sys::BPF_MAP_TYPE_PERCPU_ARRAY => {
            u128::from(entries) * (u128::from(v) * u128::from(cpus) + 8)
        }
        sys::BPF_MAP_TYPE_HASH | sys::BPF_MAP_TYPE_LRU_HASH => {
            u128::from(entries) * u128::from(HTAB_ELEM_OVERHEAD + k + v)
        }
        sys::BPF_MAP_TYPE_PERCPU_HASH | sys::BPF_MAP_TYPE_LRU_PERCPU_HASH => {
            u128::from(entries)
                * (u128::from(HTAB_ELEM_OVERHEAD + k + 8) + u128::from(v) * u128::from(cpus))
        }
        // max_entries is the data area in bytes.
        sys::BPF_MAP_TYPE_RINGBUF | sys::BPF_MAP_TYPE_USER_RINGBUF => {
            u128::from(entries) + u128::from(2 * PAGE)
        }
        // max_entries is the number of pages the arena may hold; pages are
        // allocated on demand, so this is the ceiling, not the start.
        sys::BPF_MAP_TYPE_ARENA => u128::from(entries) * u128::from(PAGE),
        // One element per task / inode / cgroup / socket that gets one.
        sys::BPF_MAP_TYPE_TASK_STORAGE
        | sys::BPF_MAP_TYPE_INODE_STORAGE
        | sys::BPF_MAP_TYPE_CGRP_STORAGE
        | sys::BPF_MAP_TYPE_SK_STORAGE => {
            u128::from(limits.assumed_tasks) * u128::from(LOCAL_STORAGE_OVERHEAD + v)
        }
        sys::BPF_MAP_TYPE_CGROUP_STORAGE => u128::from(limits.assumed_tasks) * u128::from(v),
        sys::BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE => {
            u128::from(limits.assumed_tasks) * u128::from(v) * u128::from(cpus)
        }
        sys::BPF_MAP_TYPE_STRUCT_OPS => u128::from(value + PAGE), // + trampoline page
        sys::BPF_MAP_TYPE_QUEUE | sys::BPF_MAP_TYPE_STACK => u128::from(entries) * u128::from(v),
        sys::BPF_MAP_TYPE_LPM_TRIE => u128::from(entries) * u128::from(HTAB_ELEM_OVERHEAD + k + v),
        sys::BPF_MAP_TYPE_STACK_TRACE => u128::from(entries) * u128::from(v + 8),
        // Arrays of pointers (prog/perf/cgroup arrays, map-in-map, dev/cpu maps).
        sys::BPF_MAP_TYPE_PROG_ARRAY
        | sys::BPF_MAP_TYPE_PERF_EVENT_ARRAY
        | sys::BPF_MAP_TYPE_CGROUP_ARRAY
        | sys::BPF_MAP_TYPE_ARRAY_OF_MAPS
        | sys::BPF_MAP_TYPE_HASH_OF_MAPS => u128::from(entries) * u128::from(8 + k),
        _ => u128::from(entries) * u128::from(k + v),
    };
    u64::try_from(est).unwrap_or(u64::MAX)
}

pub fn is_per_cpu(ty: u32) -> bool {
    matches!(
        ty,
        sys::BPF_MAP_TYPE_PERCPU_ARRAY
            | sys::BPF_MAP_TYPE_PERCPU_HASH
            | sys::BPF_MAP_TYPE_LRU_PERCPU_HASH
            | sys::BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE
    )
}

/// libbpf's name for a map type (`percpu_array`), or `type <n>`.
pub fn type_name(ty: u32) -> String {
    // SAFETY: libbpf returns NULL or a pointer into its static string table.
    let p = unsafe { sys::libbpf_bpf_map_type_str(ty) };
    if p.is_null() {
        return format!("type {ty}");
    }
    // SAFETY: non-NULL results are NUL-terminated static strings.
    unsafe { std::ffi::CStr::from_ptr(p) }
        .to_string_lossy()
        .into_owned()
}

pub fn info(name: String, ty: u32, key: u32, value: u32, entries: u32, l: &Limits) -> MapInfo {
    MapInfo {
        name,
        map_type: type_name(ty),
        key_size: key,
        value_size: value,
        max_entries: entries,
        per_cpu: is_per_cpu(ty),
        estimated_bytes: estimate(ty, key.into(), value.into(), entries.into(), l),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates() {
        let l = Limits::default();
        // 2^30 × 8-byte values: 8 GiB.
        assert_eq!(
            estimate(sys::BPF_MAP_TYPE_ARRAY, 4, 8, 1 << 30, &l),
            8 << 30
        );
        // Per-CPU: one copy per CPU (+ the per-element pointer).
        assert_eq!(
            estimate(sys::BPF_MAP_TYPE_PERCPU_ARRAY, 4, 16, 10, &l),
            10 * (16 * 64 + 8)
        );
        // Values round up to 8 bytes; hash elements carry a header.
        assert_eq!(
            estimate(sys::BPF_MAP_TYPE_HASH, 4, 4, 100, &l),
            100 * (48 + 8 + 8)
        );
        assert_eq!(
            estimate(sys::BPF_MAP_TYPE_RINGBUF, 0, 0, 1 << 20, &l),
            (1 << 20) + 8192
        );
        assert_eq!(estimate(sys::BPF_MAP_TYPE_ARENA, 0, 0, 256, &l), 1 << 20);
        assert_eq!(
            estimate(sys::BPF_MAP_TYPE_TASK_STORAGE, 4, 64, 0, &l),
            8192 * 128
        );
        // Saturates rather than wrapping.
        assert_eq!(
            estimate(
                sys::BPF_MAP_TYPE_PERCPU_HASH,
                8,
                u32::MAX.into(),
                u32::MAX.into(),
                &l
            ),
            u64::MAX
        );
        assert_eq!(type_name(sys::BPF_MAP_TYPE_PERCPU_ARRAY), "percpu_array");
        assert_eq!(type_name(9999), "type 9999");
    }
}
