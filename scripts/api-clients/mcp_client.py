"""Drive an MCP server with the official Python SDK (mcp==2.3.0), for schedcp's integration tests.

Run it with the venv python from `scripts/api-clients.sh paths`.

  mcp_client.py stdio --token T -- COMMAND [ARGS...]   < script.json
  mcp_client.py http --url URL --token T               < script.json
  mcp_client.py bench-http --url URL --token T --tool NAME --args JSON --clients N --calls M
  mcp_client.py bench-stdio --token T --tool NAME --args JSON --clients N --calls M -- COMMAND [ARGS...]

stdio starts COMMAND with this process's environment plus SCHEDCP_TOKEN=T; http sends
`Authorization: Bearer T`. Both use the plain `initialize` handshake (mode="legacy").

The script is a JSON list of steps, each printed as one JSON line on stdout:
  {"list_tools": true}
      -> {"tools": [{"name", "description", "input_schema", "output_schema"}, ...]}
      -> {"error"} when it raised
  {"call": "<tool>", "args": {...}, "progress": true|false}
      -> {"tool", "is_error", "structured", "text", "progress": [[progress, total, message], ...], "ms"}
      -> {"tool", "error", "ms"} (+ "code") when the call raised: a JSON-RPC error response, a
         timeout, or the SDK rejecting structured content that does not match the output schema
"text" is the text content items joined with "". "ms" is the client-side latency; for the first
successful call in a session it includes a tools/list the SDK sends to learn the output schema
(which it checks structured content against), unless a list_tools step came first.

bench-* open N client sessions at once (N servers for stdio); each connects and lists the tools
(untimed), and once all have, each makes M sequential calls. One line:
  {"clients", "calls", "errors", "p50_ms", "p99_ms", "max_ms", "wall_ms"}
"errors" counts calls that raised or returned is_error; wall_ms runs from the last connect.

Exit status: 0 done; 1 a script step raised or the session broke; 2 bad usage or script;
3 could not connect or the handshake failed (one line {"error": "..."}).
"""

import argparse
import asyncio
import json
import math
import os
import sys
import time
from contextlib import asynccontextmanager

from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client  # httpx2 client with the SDK's timeouts
from mcp.shared.exceptions import MCPError


class ConnectError(Exception):
    pass


def emit(obj) -> None:
    print(json.dumps(obj, default=str), flush=True)


def describe(exc: BaseException) -> str:
    """Flatten (nested) exception groups into 'Type: message; ...'."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe(e) for e in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"


@asynccontextmanager
async def connect(opts):
    """A connected Client; failures before the handshake completes raise ConnectError."""
    entered = False
    try:
        if opts.mode.endswith("stdio"):
            env = {**os.environ, "SCHEDCP_TOKEN": opts.token}
            params = StdioServerParameters(command=opts.command[0], args=opts.command[1:], env=env)
            async with Client(params, mode="legacy", read_timeout_seconds=opts.timeout) as client:
                entered = True
                yield client
        else:
            status = []  # last HTTP status, to say "HTTP 401" rather than only "error response"

            async def on_response(response) -> None:
                status.append(response.status_code)

            http = create_mcp_http_client(headers={"Authorization": f"Bearer {opts.token}"})
            http.event_hooks["response"].append(on_response)
            async with http:
                transport = streamable_http_client(opts.url, http_client=http)
                try:
                    async with Client(transport, mode="legacy", read_timeout_seconds=opts.timeout) as client:
                        entered = True
                        yield client
                except BaseException as e:
                    if not entered and status and status[-1] >= 400:
                        raise ConnectError(f"HTTP {status[-1]}: {describe(e)}") from e
                    raise
    except ConnectError:
        raise
    except Exception as e:  # includes ExceptionGroup
        if entered:
            raise
        raise ConnectError(describe(e)) from e


async def list_tools(client: Client) -> dict:
    tools, cursor = [], None
    while True:
        page = await client.list_tools(cursor=cursor, cache_mode="bypass")
        tools += [
            {"name": t.name, "description": t.description,
             "input_schema": t.input_schema, "output_schema": t.output_schema}
            for t in page.tools
        ]
        cursor = page.next_cursor
        if cursor is None:
            return {"tools": tools}


async def call(client: Client, name: str, args: dict, progress: bool) -> dict:
    seen = []

    async def on_progress(p: float, total: float | None, message: str | None) -> None:
        seen.append([p, total, message])

    t0 = time.perf_counter()
    try:
        r = await client.call_tool(name, args, progress_callback=on_progress if progress else None)
    except Exception as e:
        out = {"tool": name, "error": describe(e), "ms": (time.perf_counter() - t0) * 1e3}
        if isinstance(e, MCPError):
            out["code"] = e.code
        return out
    ms = (time.perf_counter() - t0) * 1e3
    text = "".join(c.text for c in r.content if c.type == "text")
    return {"tool": name, "is_error": bool(r.is_error), "structured": r.structured_content,
            "text": text, "progress": seen, "ms": ms}


def parse_script(raw: str) -> list:
    steps = json.loads(raw)
    if not isinstance(steps, list):
        raise ValueError("the script must be a JSON list of steps")
    for s in steps:
        if not (isinstance(s, dict) and (s.get("list_tools") is True or isinstance(s.get("call"), str))):
            raise ValueError(f'each step needs "call": "<tool>" or "list_tools": true, got {s!r}')
        if not isinstance(s.get("args", {}), dict):
            raise ValueError(f'"args" must be an object, got {s!r}')
    return steps


async def run_script(opts) -> int:
    try:
        steps = parse_script(sys.stdin.read())
    except ValueError as e:  # json.JSONDecodeError is a ValueError
        emit({"error": f"bad script: {e}"})
        return 2
    failed = False
    async with connect(opts) as client:
        for s in steps:
            if s.get("list_tools"):
                try:
                    out = await list_tools(client)
                except Exception as e:
                    out = {"error": describe(e)}
                failed |= "error" in out
            else:
                out = await call(client, s["call"], s.get("args", {}), bool(s.get("progress")))
                failed |= "error" in out
            emit(out)
    return 1 if failed else 0


def percentile(sorted_ms: list, p: float) -> float | None:
    """Nearest-rank percentile."""
    if not sorted_ms:
        return None
    return sorted_ms[max(0, math.ceil(p / 100 * len(sorted_ms)) - 1)]


async def bench(opts) -> int:
    try:
        args = json.loads(opts.args)
        if not isinstance(args, dict):
            raise ValueError("not an object")
    except ValueError as e:
        emit({"error": f"bad --args: {e}"})
        return 2
    latencies, errors, connect_errors = [], 0, []
    arrived, all_connected, start = 0, asyncio.Event(), 0.0

    def arrive() -> None:
        nonlocal arrived, start
        arrived += 1
        if arrived == opts.clients:
            start = time.perf_counter()
            all_connected.set()

    async def worker() -> None:
        nonlocal errors
        try:
            async with connect(opts) as client:
                # The SDK lists the tools before a session's first successful call (to check
                # structured content against the output schema); do that outside the timings.
                try:
                    await client.list_tools(cache_mode="bypass")
                except Exception as e:
                    raise ConnectError(f"tools/list failed: {describe(e)}") from e
                arrive()
                await all_connected.wait()
                if connect_errors:
                    return
                for _ in range(opts.calls):
                    t0 = time.perf_counter()
                    try:
                        r = await client.call_tool(opts.tool, args)
                        errors += bool(r.is_error)
                    except Exception:
                        errors += 1
                    latencies.append((time.perf_counter() - t0) * 1e3)
        except ConnectError as e:
            connect_errors.append(str(e))
            arrive()

    await asyncio.gather(*(worker() for _ in range(opts.clients)))
    if connect_errors:
        emit({"error": f"{len(connect_errors)} of {opts.clients} clients could not connect: {connect_errors[0]}"})
        return 3
    lat = sorted(latencies)
    emit({"clients": opts.clients, "calls": len(lat), "errors": errors,
          "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99), "max_ms": lat[-1] if lat else None,
          "wall_ms": (time.perf_counter() - start) * 1e3})
    return 0


def parse_args(argv: list) -> argparse.Namespace:
    command = []
    if "--" in argv:
        i = argv.index("--")
        argv, command = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["stdio", "http", "bench-stdio", "bench-http"])
    ap.add_argument("--url", help="streamable HTTP endpoint, e.g. http://127.0.0.1:PORT/mcp")
    ap.add_argument("--token", required=True)
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per request (default 300)")
    ap.add_argument("--tool")
    ap.add_argument("--args", default="{}", help="tool arguments as a JSON object (bench)")
    ap.add_argument("--clients", type=int, default=1)
    ap.add_argument("--calls", type=int, default=1)
    opts = ap.parse_args(argv)
    opts.command = command
    if opts.mode.endswith("stdio") and not command:
        ap.error(f"{opts.mode} needs -- COMMAND [ARGS...]")
    if opts.mode.endswith("http") and not opts.url:
        ap.error(f"{opts.mode} needs --url")
    if opts.mode.startswith("bench") and (not opts.tool or opts.clients < 1 or opts.calls < 1):
        ap.error(f"{opts.mode} needs --tool and --clients/--calls >= 1")
    return opts


async def main() -> int:
    opts = parse_args(sys.argv[1:])
    try:
        return await (bench(opts) if opts.mode.startswith("bench") else run_script(opts))
    except ConnectError as e:
        emit({"error": str(e)})
        return 3
    except Exception as e:  # the session broke after the handshake
        emit({"error": describe(e)})
        return 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
