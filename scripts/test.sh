#!/usr/bin/env bash
# Set up everything and run every check: formatting, clippy, unit tests,
# the policy store on SQLite and on a real PostgreSQL + pgvector, and the
# end-to-end tests that boot the sched_ext micro-VM, and the agent interface
# driven by real MCP and REST clients.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# Every test tier; each fails with what to set up when its prerequisites are
# missing (a plain `cargo test` runs only the pure tier).
TIERS="schedcp/tier-host,schedcp/tier-lab,schedcp/tier-external"
echo "==> cargo fmt --check" >&2
cargo fmt --all --check
echo "==> cargo clippy" >&2
cargo clippy --release --workspace --all-targets --locked --features "$TIERS" -- -D warnings
echo "==> test PostgreSQL + pgvector (non-root, loopback)" >&2
scripts/pg-test-server.sh start
SCHEDCP_TEST_PG_URL="$(scripts/pg-test-server.sh url)"
export SCHEDCP_TEST_PG_URL
echo "==> MCP/REST test clients (Python MCP SDK, MCP Inspector, schemathesis; pinned, cached)" >&2
scripts/api-clients.sh >/dev/null
echo "==> cargo test (tiers: pure, host, lab, external)" >&2
# Two test threads: each lab test boots a 2-vCPU TCG VM; more would only thrash.
# Tests under a `quiet` module must see a significant effect on this host, and
# the other tests' load is noise to them: they run afterwards, one at a time.
cargo test --release --workspace --locked --features "$TIERS" -- --test-threads=2 --skip ::quiet::
QUIET=(cargo test --release -p schedcp --locked --features "$TIERS" --test host)
# A filter that matched nothing would pass silently: count them first.
n=$("${QUIET[@]}" -- --list ::quiet:: 2>/dev/null | grep -c ': test$' || true)
if [ "$n" -lt 2 ]; then
    echo "expected the host tier's quiet tests, found $n" >&2
    exit 1
fi
echo "==> cargo test: the host tier's $n quiet tests, one at a time" >&2
"${QUIET[@]}" -- --test-threads=1 ::quiet::
