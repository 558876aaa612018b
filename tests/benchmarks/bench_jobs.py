"""The job system: submits accepted per second, and submit -> succeeded latency over the LLM's own time.

    uv run python -m tests.benchmarks bench_jobs          (or: just bench jobs)

Every party is its own process on loopback: the fake OpenRouter (``tests.fakes.openrouter``), the API
(``xenios-ai serve``, one Granian worker, production-like settings: key and JWT guards, JSON logs), one
worker process (``xenios-ai worker``, the ``llm`` and ``default`` queues), and the aiohttp load generator
(``python -m tests.benchmarks.bench_jobs load``). PostgreSQL and Redis are the machine's
(XENIOS_TEST_DATABASE_URL / XENIOS_TEST_REDIS_URL) or embedded ones, with a fresh database.

1. Enqueue throughput: N connections, closed loop, POST /api/v1/jobs/analysis for a fixed time; jobs/s
   answered 202 (each one a committed row and a message in Redis). No worker runs meanwhile.
2. Latency: one job at a time, submit (POST) -> succeeded (seen on GET /api/v1/jobs/{id}/events, opened
   right after the POST), for a minimal analysis job whose LLM answer comes from the fake. Baseline in
   the same run: the same chat request sent straight to the fake (the LLM's own time), and the router's
   own latency per job from ``ai_backend.llm_requests``. Server-side, created_at -> finished_at.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis

from tests.benchmarks.bench_llm import _database
from tests.support import tokens
from tests.support.processes import ApiServer, WorkerProcess, stop_process, wait_until
from tests.support.sse import sse_events

ROOT = Path(__file__).resolve().parents[2]
KEY = f"sk-or-v1-bench-{uuid.uuid4().hex}"
TEXT = "Coach: how did the week go? Client: better, I ran twice and slept more."
BODY = {"task": "session_summary", "text": TEXT}
TARGET_JOBS_PER_SECOND = 500.0
TARGET_OVERHEAD_MS = 50.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# -- the load generator (its own process) -------------------------------------------------------------


async def _load(
    url: str, connections: int, seconds: float, warmup: float, max_requests: int
) -> dict[str, Any]:
    import aiohttp

    headers = tokens.headers("bench-user") | {"Content-Type": "application/json"}
    body = json.dumps(BODY).encode()
    latencies: list[float] = []
    errors: list[str] = []
    recording = False

    async def one(session: aiohttp.ClientSession) -> None:
        started = time.perf_counter()
        try:
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            if recording:
                errors.append(type(exc).__name__)
            return
        if recording:
            if status == 202:
                latencies.append(time.perf_counter() - started)
            else:
                errors.append(f"status {status}")

    async def loop(session: aiohttp.ClientSession, stop_at: float) -> None:
        while time.perf_counter() < stop_at and len(latencies) + len(errors) < max_requests:
            await one(session)

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        stop = time.perf_counter() + warmup
        await asyncio.gather(*(loop(session, stop) for _ in range(connections)))
        recording = True
        started = time.perf_counter()
        await asyncio.gather(*(loop(session, started + seconds) for _ in range(connections)))
        elapsed = time.perf_counter() - started
    ms = [v * 1000 for v in latencies] or [0.0]
    return {
        "accepted": len(latencies),
        "errors": len(errors),
        "error_kinds": sorted(set(errors))[:5],
        "seconds": round(elapsed, 3),
        "jobs_per_second": round(len(latencies) / elapsed, 1),
        "p50_ms": round(percentile(ms, 0.5), 2),
        "p99_ms": round(percentile(ms, 0.99), 2),
    }


def _run_load(url: str, connections: int, seconds: float) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "tests.benchmarks.bench_jobs", "load", "--url", url,
         "--connections", str(connections), "--seconds", str(seconds)],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# -- the parties ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def _fake() -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.openrouter", "--api-key", KEY, "--max-recorded", "10"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        yield process.stdout.readline().decode().strip()
    finally:
        stop_process(process)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _api_worker_pid(api: ApiServer) -> int:
    assert api.process is not None
    children = Path(f"/proc/{api.process.pid}/task/{api.process.pid}/children").read_text().split()
    return int(children[0])


def _reset(database_url: str, redis_url: str, namespace: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE ai_backend.jobs, ai_backend.llm_requests")
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{namespace}:dramatiq:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


# -- phases --------------------------------------------------------------------------------------------


def _throughput(api: ApiServer, connections: int, seconds: float, rounds: int) -> dict[str, Any]:
    url = f"{api.url}/api/v1/jobs/analysis"
    pid = _api_worker_pid(api)
    best: dict[str, Any] = {}
    for _ in range(rounds):
        cpu = _cpu_seconds(pid)
        result = _run_load(url, connections, seconds)
        result["api_cpu_ms_per_job"] = round(
            (_cpu_seconds(pid) - cpu) * 1000 / max(1, result["accepted"]), 3
        )  # includes the warm-up second
        if result["jobs_per_second"] > best.get("jobs_per_second", 0):
            best = result
    return best


async def _llm_baseline(fake_url: str, count: int) -> list[float]:
    """The fake's own time for the router's request (same body shape), one at a time, kept-alive."""
    body = {
        "model": "anthropic/claude-opus-4.5",
        "messages": [
            {"role": "system", "content": "You summarise coaching sessions."},
            {"role": "user", "content": TEXT},
        ],
        "temperature": 0.3,
        "max_tokens": 2048,
        "usage": {"include": True},
    }
    times = []
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}) as client:
        for _ in range(count + 10):
            started = time.perf_counter()
            response = await client.post(f"{fake_url}/chat/completions", json=body)
            response.raise_for_status()
            times.append((time.perf_counter() - started) * 1000)
    return times[10:]


def _latency(api: ApiServer, database_url: str, count: int) -> dict[str, Any]:
    headers = tokens.headers("bench-user")
    client = httpx.Client(base_url=api.url, headers=headers, timeout=30)
    observed: list[float] = []
    ids: list[str] = []
    for index in range(count + 10):
        started = time.perf_counter()
        response = client.post("/api/v1/jobs/analysis", json=BODY)
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]
        with client.stream("GET", f"/api/v1/jobs/{job_id}/events") as stream:
            last = list(sse_events(stream))[-1]
        elapsed = (time.perf_counter() - started) * 1000
        assert last[1]["status"] == "succeeded", last
        if index >= 10:  # the first jobs warm up connections and the router
            observed.append(elapsed)
            ids.append(job_id)
    client.close()
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            """SELECT extract(epoch FROM j.finished_at - j.created_at) * 1000, r.latency_ms
               FROM ai_backend.jobs j JOIN ai_backend.llm_requests r ON r.job_id = j.id::text
               WHERE j.id = ANY(%s::uuid[])""",
            (ids,),
        ).fetchall()
    server = [float(row[0]) for row in rows]
    router = [float(row[1]) for row in rows]
    return {"observed": observed, "server": server, "router": router}


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(values, 0.5), 2),
        "p99_ms": round(percentile(values, 0.99), 2),
        "mean_ms": round(statistics.fmean(values), 2),
    }


def run(
    out_dir: Path, *, connections: int = 32, seconds: float = 5.0, rounds: int = 2, jobs: int = 200
) -> dict[str, Any]:
    with _database() as (database_url, redis_url), _fake() as fake_url:
        namespace = f"xbench{uuid.uuid4().hex[:6]}"
        env = {
            "ENVIRONMENT": "production",
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "INFO",
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "REDIS_NAMESPACE": namespace,
            "XENIOS_BACKEND_API_KEY": tokens.API_KEY,
            "SUPABASE_JWT_SECRET": tokens.TEST_JWT_SECRET,
            "OPENROUTER_BASE_URL": fake_url,
            "OPENROUTER_API_KEY": KEY,
            "STORAGE_DIR": str(out_dir / "bench-jobs-storage"),
            "DATA_DIR": str(out_dir / "bench-jobs-data"),
        }
        api = ApiServer(env, workers=1, log_path=out_dir / "bench-jobs-api.log")
        api.start()
        worker = WorkerProcess(
            env, queues="llm,default", processes=1, threads=4, log_path=out_dir / "bench-jobs-worker.log"
        )
        try:
            throughput = _throughput(api, connections, seconds, rounds)
            _reset(database_url, redis_url, namespace)
            worker.start()
            wait_until(
                lambda: bool(redis.Redis.from_url(redis_url).hlen(f"{namespace}:workers")), 60, "the worker"
            )
            llm = asyncio.run(_llm_baseline(fake_url, jobs))
            latency = _latency(api, database_url, jobs)
        finally:
            worker.stop()
            api.stop()
    llm_stats = _stats(llm)
    observed, server, router = (_stats(latency[k]) for k in ("observed", "server", "router"))
    overhead = round(observed["p50_ms"] - llm_stats["p50_ms"], 2)
    result = {
        "throughput": throughput
        | {"connections": connections, "target_jobs_per_second": TARGET_JOBS_PER_SECOND},
        "throughput_ratio_to_target": round(throughput["jobs_per_second"] / TARGET_JOBS_PER_SECOND, 2),
        "latency": {
            "jobs": jobs,
            "llm_direct": llm_stats,
            "router_in_job": router,
            "submit_to_succeeded_observed": observed,
            "created_to_finished_server": server,
            "p50_overhead_over_llm_ms": overhead,
            "p50_overhead_over_router_ms": round(observed["p50_ms"] - router["p50_ms"], 2),
            "target_overhead_ms": TARGET_OVERHEAD_MS,
        },
    }
    _print(result)
    return result


def _print(result: dict[str, Any]) -> None:
    t, lat = result["throughput"], result["latency"]
    label = f"{t['connections']} connections, 1 API worker"
    print(f"{'enqueue (POST /jobs/analysis)':<40}{'jobs/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}")
    print(f"{label:<40}{t['jobs_per_second']:>10}{t['p50_ms']:>10}{t['p99_ms']:>10}{t['errors']:>8}")
    ratio, cpu = result["throughput_ratio_to_target"], t["api_cpu_ms_per_job"]
    print(f"  target {TARGET_JOBS_PER_SECOND:g} jobs/s: ratio {ratio}, API CPU {cpu} ms/job")
    print(f"\n{'latency (one job at a time)':<40}{'p50 ms':>10}{'p99 ms':>10}{'mean ms':>10}")
    for name, key in (
        ("LLM direct (the fake)", "llm_direct"),
        ("router inside the job", "router_in_job"),
        ("submit -> succeeded (client)", "submit_to_succeeded_observed"),
        ("created -> finished (server)", "created_to_finished_server"),
    ):
        s = lat[key]
        print(f"{name:<40}{s['p50_ms']:>10}{s['p99_ms']:>10}{s['mean_ms']:>10}")
    overhead = lat["p50_overhead_over_llm_ms"]
    print(f"  p50 overhead over the LLM: {overhead} ms (target <= {TARGET_OVERHEAD_MS:g})")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.bench_jobs")
    sub = parser.add_subparsers(dest="command")
    load = sub.add_parser("load", help="the load generator (used by run)")
    load.add_argument("--url", required=True)
    load.add_argument("--connections", type=int, default=32)
    load.add_argument("--seconds", type=float, default=5.0)
    load.add_argument("--warmup", type=float, default=1.0)
    load.add_argument("--max-requests", type=int, default=1_000_000)
    args = parser.parse_args()
    if args.command == "load":
        with contextlib.suppress(ImportError):
            import uvloop

            uvloop.install()
        print(
            json.dumps(
                asyncio.run(_load(args.url, args.connections, args.seconds, args.warmup, args.max_requests))
            )
        )
        return
    out = Path("bench-results")
    out.mkdir(exist_ok=True)
    print(json.dumps(run(out), indent=2))


if __name__ == "__main__":
    main()
