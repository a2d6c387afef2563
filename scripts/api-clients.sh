#!/usr/bin/env bash
# Install the external test clients for schedcp's MCP server and REST API, pinned
# and cached, so that the Rust integration tests can run them:
#
#   $CACHE/api-clients/venv       Python venv: mcp==2.3.0 (official MCP SDK, driven by
#                                 scripts/api-clients/mcp_client.py) + schemathesis==4.32.5
#   $CACHE/api-clients/wheels     wheelhouse the venv is installed from (no index)
#   $CACHE/api-clients/inspector  @modelcontextprotocol/inspector 2.12.0 (its CLI)
#   $CACHE/api-clients/npm        npm cache
#
# CACHE is $SCHEDCP_CACHE, else ~/.cache/schedcp. The pins are the committed files in
# scripts/api-clients/ (requirements.lock.txt, package.json, package-lock.json).
#
#   scripts/api-clients.sh [install]   install what is missing or out of date, then print the paths
#   scripts/api-clients.sh paths       print the paths without installing; exit 1 if not installed
#
# Both print two lines on stdout (everything else goes to stderr):
#   python=<venv python>
#   inspector=<mcp-inspector executable>
#
# Idempotent: each part records the sha256 of its lock files in a stamp file, and a run
# whose stamps match does nothing. pip downloads into the wheelhouse only when the
# wheelhouse lacks a file; npm uses its cache first (--prefer-offline).
#
# Run the inspector with HTTP_PROXY, HTTPS_PROXY, http_proxy and https_proxy UNSET.
# When one of them is set, inspector 2.12.0 loads undici 8, which needs Node >= 22.19; on
# Node 20 that fails ("HTTPS_PROXY / HTTP_PROXY is set but the `undici` package could not
# be loaded"), and NO_PROXY does not help. The tests only talk to 127.0.0.1, so no proxy is
# needed there. The installation itself keeps the proxy variables: pip and npm need them.
#
# Needs python3 >= 3.10 with venv (Debian: python3-venv), node >= 20 and npm. No root.
set -euo pipefail

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'scripts/api-clients.sh: %s\n' "$*" >&2; exit 3; }

src="$(cd "$(dirname "$0")/api-clients" && pwd)"
root="${SCHEDCP_CACHE:-$HOME/.cache/schedcp}/api-clients"
venv="$root/venv"
wheels="$root/wheels"
inspector="$root/inspector"
python="$venv/bin/python"
inspector_bin="$inspector/node_modules/.bin/mcp-inspector"

req="$src/requirements.lock.txt"
py_sha="$(sha256sum "$req" | cut -d' ' -f1)"
js_sha="$(cat "$src/package.json" "$src/package-lock.json" | sha256sum | cut -d' ' -f1)"

venv_ok() {
    [[ "$(cat "$venv/.lock-sha256" 2>/dev/null)" == "$py_sha" ]] && "$python" -c '' 2>/dev/null
}
inspector_ok() {
    [[ "$(cat "$inspector/.lock-sha256" 2>/dev/null)" == "$js_sha" && -x "$inspector_bin" ]]
}
print_paths() {
    printf 'python=%s\ninspector=%s\n' "$python" "$inspector_bin"
}

case "${1:-install}" in
    paths)
        if venv_ok && inspector_ok; then
            print_paths
            exit 0
        fi
        echo "scripts/api-clients.sh: the API test clients are not installed (or are out of date); run scripts/api-clients.sh" >&2
        exit 1
        ;;
    install) ;;
    *)
        echo "usage: scripts/api-clients.sh [install|paths]" >&2
        exit 2
        ;;
esac

mkdir -p "$root"
# One installer at a time per cache (e.g. test binaries started in parallel).
exec 9>"$root/.install.lock"
flock 9

# This machine's environment points pip at an unrelated (empty) wheel directory.
unset PIP_FIND_LINKS
export PIP_DISABLE_PIP_VERSION_CHECK=1

if venv_ok; then
    log "python clients present in $venv"
else
    command -v python3 >/dev/null || die "python3 is required"
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
        || die "python3 >= 3.10 is required (mcp 2.3.0), found $(python3 --version 2>&1)"
    log "creating $venv"
    rm -rf "$venv"
    python3 -m venv "$venv" \
        || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
    mkdir -p "$wheels"
    # Offline check: does the wheelhouse hold every pinned file for this interpreter?
    if ! "$venv/bin/pip" download -q --no-index --find-links "$wheels" -d "$wheels" -r "$req" >/dev/null 2>&1; then
        log "downloading pinned wheels into $wheels"
        "$venv/bin/pip" download -q -d "$wheels" -r "$req" >&2
    fi
    log "installing mcp + schemathesis from $wheels"
    "$venv/bin/pip" install -q --no-index --find-links "$wheels" -r "$req" >&2
    "$venv/bin/pip" check >/dev/null
    echo "$py_sha" >"$venv/.lock-sha256"
fi

if inspector_ok; then
    log "MCP Inspector present in $inspector"
else
    command -v node >/dev/null && command -v npm >/dev/null || die "node and npm are required"
    node_major="$(node -p 'process.versions.node.split(".")[0]')"
    ((node_major >= 20)) || die "node >= 20 is required for the MCP Inspector, found $(node --version)"
    log "installing MCP Inspector into $inspector"
    mkdir -p "$inspector"
    cp "$src/package.json" "$src/package-lock.json" "$inspector/"
    # Not `npm ci`: it rejects this lock file (an optional dependency of vite is not listed).
    # `npm install` from the same lock installs exactly the pinned versions.
    npm install --prefix "$inspector" --cache "$root/npm" --prefer-offline --no-audit --no-fund >&2
    [[ -x "$inspector_bin" ]] || die "npm install did not produce $inspector_bin"
    echo "$js_sha" >"$inspector/.lock-sha256"
fi

print_paths
