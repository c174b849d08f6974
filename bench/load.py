"""wrk as the load generator of the claim and listing scenarios: Lua scripts made here, figures read back.

wrk runs one Lua state per thread, and a thread's connections share it. Where a request depends on the
answer to the previous one (a claim, then its execution, then the PATCH that finishes it) each thread gets one
connection (`-t N -c N`), so that a thread's state is that connection's. Distinct jobs per request come from a
file of job ids that the threads share out by line number.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Shared by every script: thread numbering (setup() runs in the main state and sets `tid` in the thread's
# state before its init()), the job ids of this thread, counters read back in done(), and one line of JSON.
_COMMON = r"""
local threads = {}
function setup(thread)
  thread:set("tid", #threads)
  thread:set("nthreads", __THREADS__)
  threads[#threads + 1] = thread
end

local ids, next_id = {}, 1
local function load_ids(path)
  local n = 0
  for line in io.lines(path) do
    if n % nthreads == tid then ids[#ids + 1] = line end
    n = n + 1
  end
end

ok, failed, done_cycles, ran_out = 0, 0, 0, 0
first_error = ""
local function fail(status, body)
  failed = failed + 1
  if first_error == "" then first_error = status .. " " .. body:sub(1, 200):gsub("%s", " ") end
end

local function next_job()
  local id = ids[next_id]
  next_id = next_id + 1
  if id == nil then ran_out = 1 end
  return id
end

-- wrk calls request() once in thread 0's state to check the script, and never sends that request.
local verified = false
local function verifying()
  if tid == 0 and not verified then
    verified = true
    return true
  end
  return false
end

function done(summary, latency, requests)
  local counts = {ok = 0, failed = 0, cycles = 0, ran_out = 0}
  local first = ""
  for _, t in ipairs(threads) do
    counts.ok = counts.ok + t:get("ok")
    counts.failed = counts.failed + t:get("failed")
    counts.cycles = counts.cycles + t:get("done_cycles")
    counts.ran_out = counts.ran_out + t:get("ran_out")
    if first == "" then first = t:get("first_error") end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH {"ok": %d, "failed": %d, "cycles": %d, "ran_out": %d, "requests": %d, "duration_us": %d, '
      .. '"socket_errors": %d, "latency_us": {"p50": %d, "p90": %d, "p99": %d, "max": %d}}\n',
    counts.ok, counts.failed, counts.cycles, counts.ran_out, summary.requests, summary.duration,
    e.connect + e.read + e.write + e.timeout + e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
  io.write("BENCH_FIRST_ERROR " .. first .. "\n")
end
"""

_HEADERS = r"""
local headers = {["Authorization"] = [==[__AUTHORIZATION__]==], ["Content-Type"] = "application/json"}
"""

CLAIMS = (
    _COMMON
    + _HEADERS
    + r"""
function init(args) load_ids(args[1]) end

function request()
  if verifying() then return wrk.format("GET", "/health") end
  local id = next_job()
  if id == nil then
    wrk.thread:stop()
    return wrk.format("GET", "/health")
  end
  return wrk.format("POST", "/jobs/" .. id .. ":claim", headers, "")
end

function response(status, headers, body)
  if status == 201 then ok = ok + 1 elseif status ~= 200 or ran_out == 0 then fail(status, body) end
end
"""
)
"""POST /jobs/{id}:claim, one job id after another, each once."""

CYCLES = (
    _COMMON
    + _HEADERS
    + r"""
function init(args) load_ids(args[1]) end

local step, job, op, execution = "claim", nil, nil, nil
local stamp = '"2030-01-01T00:00:00Z"'

function request()
  if verifying() then return wrk.format("GET", "/health") end
  if step == "claim" then
    job = next_job()
    if job == nil then
      wrk.thread:stop()
      return wrk.format("GET", "/health")
    end
    return wrk.format("POST", "/jobs/" .. job .. ":claim", headers, "")
  elseif step == "execution" then
    return wrk.format("POST", "/jobs/" .. job .. "/executions", headers,
      '{"operation_id": "' .. op .. '", "status": "succeeded", "started_at": ' .. stamp
        .. ', "ended_at": ' .. stamp .. ', "outputs": [], "details": {}}')
  else
    return wrk.format("PATCH", "/operations/" .. op, headers,
      '{"done": true, "result": {"execution_id": "' .. execution .. '"}}')
  end
end

function response(status, headers, body)
  if ran_out == 1 then return end
  if step == "claim" and status == 201 then
    op, step = body:match('^{"id":"([^"]+)"'), "execution"
  elseif step == "execution" and status == 201 then
    execution, step = body:match('^{"id":"([^"]+)"'), "finish"
  elseif step == "finish" and status == 200 then
    ok, done_cycles, step = ok + 1, done_cycles + 1, "claim"
  else
    fail(status, body)
    step = "claim"
  end
end
"""
)
"""claim → POST /jobs/{id}/executions → PATCH /operations/{id} done, one job after another."""

GETS = (
    _COMMON
    + _HEADERS
    + r"""
local path = [==[__PATH__]==]
function request()
  return wrk.format("GET", path, headers)
end

function response(status, headers, body)
  if status == 200 then ok = ok + 1 else fail(status, body) end
end
"""
)
"""GET one path again and again."""


@dataclass(frozen=True)
class Run:
    """What one wrk run counted."""

    ok: int
    failed: int
    cycles: int
    ran_out: bool
    requests: int
    seconds: float
    socket_errors: int
    latency_ms: dict[str, float]
    first_error: str | None

    @property
    def ok_per_s(self) -> float:
        return self.ok / self.seconds

    @property
    def cycles_per_s(self) -> float:
        return self.cycles / self.seconds


def wrk(
    url: str,
    script: str,
    *,
    threads: int,
    connections: int,
    seconds: float,
    authorization: str,
    ids: list[str] | None = None,
    path: str = "/",
) -> Run:
    """Run `script` (CLAIMS, CYCLES or GETS) against `url` for `seconds`; refuse a run that went wrong
    (any failed request, a socket error, or job ids that ran out before the time was up)."""
    text = script
    for name, value in {"THREADS": threads, "AUTHORIZATION": authorization, "PATH": path}.items():
        assert "]==]" not in str(value)
        text = text.replace(f"__{name}__", str(value))
    with tempfile.TemporaryDirectory(prefix="nmdc-bench-wrk-") as folder:
        script_path = Path(folder) / "script.lua"
        script_path.write_text(text)
        command = [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
        ]
        command += ["-s", str(script_path), url]
        if ids is not None:
            ids_path = Path(folder) / "ids.txt"
            ids_path.write_text("\n".join(ids) + "\n")
            command += ["--", str(ids_path)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0 or "BENCH {" not in done.stdout:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout[-2000:]} {done.stderr[-2000:]}")
    lines = done.stdout.splitlines()
    counts: dict[str, Any] = json.loads(
        next(line for line in lines if line.startswith("BENCH {")).removeprefix("BENCH ")
    )
    first_error = next(line for line in lines if line.startswith("BENCH_FIRST_ERROR")).split(" ", 1)[1:]
    run = Run(
        ok=counts["ok"],
        failed=counts["failed"],
        cycles=counts["cycles"],
        ran_out=bool(counts["ran_out"]),
        requests=counts["requests"],
        seconds=counts["duration_us"] / 1e6,
        socket_errors=counts["socket_errors"],
        latency_ms={k: round(v / 1000, 2) for k, v in counts["latency_us"].items()},
        first_error=first_error[0].strip() if first_error and first_error[0].strip() else None,
    )
    if run.failed or run.socket_errors or run.ran_out or not run.ok:
        raise RuntimeError(f"wrk run went wrong: {run} (command: {' '.join(command)})")
    return run
