"""Drive an HTTP endpoint with wrk (https://github.com/wg/wrk) and read its figures.

A Python load generator tops out near 300 requests/s on our machines, below what either
endpoint of the capture bench serves, so the load comes from wrk (C, an event loop per
thread). Each request is made by a Lua script: a fresh Idempotency-Key and client visit id
(a UUID v4), an agent's token and a loan that agent holds a task on, taken round-robin, and
a phone visit that happened a few minutes ago. Its `done()` prints one line of JSON with the
counts and the latency percentiles, which `run` parses.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MARK = "WRK_JSON "

# %s: the (token, loan) pairs as a Lua table, the findings' JSON, wrk's thread count.
_SCRIPT = r"""
local pairs_ = { %s }
local findings = [==[%s]==]
local thread_count = %d
local counter = 0

-- setup() runs in wrk's main interpreter, once per thread: a distinct seed for each.
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tag", threads)
end

-- Each thread starts its round of the pairs at its own share of it: two requests in
-- flight on one loan at once are as rare as two agents' visits of one loan at once.
function init(args)
  math.randomseed(os.time() * 1000 + tag * 7919)
  counter = math.floor((tag - 1) * #pairs_ / thread_count)
end

local function uuid4()
  local template = "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx"
  return (template:gsub("[xy]", function(c)
    local v = (c == "x") and math.random(0, 15) or math.random(8, 11)
    return string.format("%%x", v)
  end))
end

function request()
  counter = counter + 1
  local pair = pairs_[counter %% #pairs_ + 1]
  local id = uuid4()
  local now = os.time()
  local body = string.format(
    '{"visit_id":"%%s","task_id":null,"loan_id":"%%s","method":"phone","outcome":"completed",'
    .. '"started_at":"%%s","ended_at":"%%s","findings":%%s,"notes":null}',
    id, pair[2],
    os.date("!%%Y-%%m-%%dT%%H:%%M:%%SZ", now - 600),
    os.date("!%%Y-%%m-%%dT%%H:%%M:%%SZ", now - 300),
    findings)
  return wrk.format("POST", "/v1/visits", {
    ["Authorization"] = "Bearer " .. pair[1],
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = id,
  }, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests":%%d,"duration_us":%%d,"non_2xx":%%d,"connect":%%d,"read":%%d,'
    .. '"write":%%d,"timeout":%%d,"p50_us":%%d,"p90_us":%%d,"p99_us":%%d,"max_us":%%d}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


@dataclass(frozen=True)
class Load:
    """How wrk drives the endpoint: the same for both endpoints of a run."""

    connections: int = 16
    threads: int = 2
    seconds: float = 20.0
    timeout_seconds: float = 10.0


@dataclass(frozen=True)
class Figures:
    requests: int
    seconds: float
    failed: int  # non-2xx answers and socket errors
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @property
    def rate(self) -> float:
        """Answered requests a second (failed ones included: wrk counts every answer)."""
        return self.requests / self.seconds if self.seconds else 0.0


def script(
    path: Path,
    captures: Sequence[tuple[str, str]],
    findings: Mapping[str, Any],
    threads: int = Load.threads,
) -> Path:
    """Write the Lua script that sends captures as the (token, loan_id) pairs, for wrk
    running `threads` threads."""
    if not captures:
        raise ValueError("no (token, loan) pair to capture visits with")
    table = ", ".join(f"{{{_lua(token)}, {_lua(loan)}}}" for token, loan in captures)
    document = json.dumps(findings, separators=(",", ":"))
    path.write_text(_SCRIPT % (table, document, threads, MARK))
    return path


def _lua(text: str) -> str:
    # Tokens and loan ids are ASCII without quotes or backslashes; JSON's escaping is Lua's.
    return json.dumps(text)


def require_wrk() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise RuntimeError("wrk is not installed (`make bench` installs it: apt-get install wrk)")
    return found


async def run(url: str, lua: Path, load: Load) -> Figures:
    """One wrk run against `url` (scheme, host and port; the script names the path)."""
    process = await asyncio.create_subprocess_exec(
        require_wrk(),
        f"-t{load.threads}",
        f"-c{load.connections}",
        f"-d{load.seconds:g}s",
        f"--timeout={load.timeout_seconds:g}s",
        "-s",
        str(lua),
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    return parse(output.decode(errors="replace"))


def parse(output: str) -> Figures:
    """The figures of the script's `done()` line in wrk's output."""
    for line in output.splitlines():
        if line.startswith(MARK):
            raw = json.loads(line[len(MARK) :])
            failed = sum(raw[k] for k in ("non_2xx", "connect", "read", "write", "timeout"))
            return Figures(
                requests=raw["requests"],
                seconds=raw["duration_us"] / 1e6,
                failed=failed,
                p50_ms=raw["p50_us"] / 1000,
                p90_ms=raw["p90_us"] / 1000,
                p99_ms=raw["p99_us"] / 1000,
                max_ms=raw["max_us"] / 1000,
            )
    raise RuntimeError(f"wrk printed no figures:\n{output[-2000:]}")
