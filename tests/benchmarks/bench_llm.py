"""LLM routing overhead: the fake OpenRouter alone vs a bare relay vs the service, same run, one worker.

    uv run python -m tests.benchmarks bench_llm          (or: just bench llm)

Every party is its own process on loopback: the fake OpenRouter (``tests.fakes.openrouter``), two bare
relays (``llm_relay``: raw ASGI on Granian, openai SDK on aiohttp, one per SDK call style), the service
(``xenios-ai serve``, one Granian worker, production settings: API key and JWT guards, routing, JSON
request logs, usage rows batched into PostgreSQL), and the aiohttp load generator (``loadgen``).

Measured, for /complete and /stream (and the same calls through the OpenAI-compatible face,
/v1/chat/completions, target ``openai``), at 1 and 16 connections: requests/s, p50/p99 latency, time to
first token, and the server worker's CPU time per request (from /proc; steadier than requests/s on a
shared machine). The targets take turns for three rounds and each one's best round counts: the lowest
p50 at 1 connection, the most requests/s at 16.
"Added" is the service's p50 minus the fake's p50 at 1 connection, "ratio" the service's requests/s over
a relay's at 16. Then 1,000 concurrent slow streams (~5 s each) against the service: all
must complete, and the worker's peak RSS (VmHWM) must stay within 300 MB. Finally the usage rows in
PostgreSQL are counted against the requests sent to the service.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg

from tests.benchmarks.common import ROOT, database, fake_openrouter, load, rss_samples, service_env
from tests.support import tokens
from tests.support.processes import (
    ApiServer,
    child_pid,
    cpu_seconds,
    free_port,
    status_kb,
    stop_process,
    wait_until,
)
from xenios_ai.llm.tasks import build_catalogue

MODEL = "anthropic/claude-opus-4.5"
KEY = f"sk-or-v1-bench-{uuid.uuid4().hex}"
INPUT = "How did my week of training go?"
SLOW = '[[fake:{"chunks": 20, "token_delay": 0.25}]]'  # 20 chunks over ~5 s
TARGETS = ("fake", "relay_create", "relay_post", "service", "openai")
"""``openai``: the same service process, through its OpenAI-compatible face (/v1/chat/completions)."""
RSS_LIMIT_MB = 300


# -- the parties ------------------------------------------------------------------------------------


@contextlib.contextmanager
def _relay(upstream: str, call: str) -> Iterator[tuple[str, int]]:
    port = free_port()
    env = os.environ | {"RELAY_UPSTREAM": upstream, "RELAY_KEY": KEY, "RELAY_CALL": call}
    process = subprocess.Popen(
        [sys.executable, "-m", "granian", "--interface", "asgi", "--workers", "1", "--port", str(port),
         "--no-ws", "--log-level", "warning", "tests.benchmarks.llm_relay:app"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.post(f"{url}/complete", json={"input": "hi"}, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(up, 30, f"the {call} relay")
        yield url, child_pid(process)
    finally:
        stop_process(process)


@contextlib.contextmanager
def _service(upstream: str, database_url: str, redis_url: str, log: Path) -> Iterator[ApiServer]:
    env = service_env(
        database_url, redis_url, OPENROUTER_BASE_URL=upstream, OPENROUTER_API_KEY=KEY, DB_POOL_MAX="4"
    )
    server = ApiServer(env, workers=1, log_path=log)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _rss_mb(pid: int, field: str = "VmRSS") -> float:
    return round(status_kb(pid, field) / 1024, 1)


# -- measuring --------------------------------------------------------------------------------------


def _requests(urls: dict[str, str], service_headers: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Per target and mode: (url, body, headers, first-token marker)."""
    chat = build_catalogue()["chat"]
    messages = [{"role": "system", "content": chat.system_prompt}, {"role": "user", "content": INPUT}]
    upstream = {
        "model": MODEL,
        "messages": messages,
        "temperature": chat.temperature,
        "max_tokens": chat.max_tokens,
    }
    streamed = upstream | {"stream": True, "stream_options": {"include_usage": True}}
    auth = {"Authorization": f"Bearer {KEY}"}
    service_body = {"task": "chat", "input": INPUT}
    openai_body: dict[str, Any] = {"model": "chat", "messages": [{"role": "user", "content": INPUT}]}
    openai_streamed = openai_body | {"stream": True, "stream_options": {"include_usage": True}}
    openai_url = f"{urls['service']}/v1/chat/completions"
    return {
        "fake": {
            "complete": (f"{urls['fake']}/chat/completions", upstream, auth, None),
            "stream": (f"{urls['fake']}/chat/completions", streamed, auth, '"content":"'),
        },
        **{
            relay: {
                "complete": (f"{urls[relay]}/complete", {"input": INPUT}, {}, None),
                "stream": (f"{urls[relay]}/stream", {"input": INPUT}, {}, "event: delta"),
            }
            for relay in ("relay_create", "relay_post")
        },
        "service": {
            "complete": (f"{urls['service']}/api/v1/llm/complete", service_body, service_headers, None),
            "stream": (f"{urls['service']}/api/v1/llm/stream", service_body, service_headers, "event: delta"),
        },
        "openai": {
            "complete": (openai_url, openai_body, service_headers, None),
            "stream": (openai_url, openai_streamed, service_headers, '"content":"'),
        },
    }


def _burst(server: ApiServer, headers: dict[str, str], count: int) -> dict[str, Any]:
    """``count`` slow streams at once; the worker's RSS sampled meanwhile."""
    pid = child_pid(server.process)
    before = _rss_mb(pid)
    with rss_samples(pid, 0.1) as samples:
        result = load(
            f"{server.url}/api/v1/llm/stream",
            {"task": "chat", "input": f"{INPUT} {SLOW}"},
            headers,
            "event: done",
            burst=count,
            timeout=60,
        )
    after = _rss_mb(pid)
    return {
        "streams": count,
        "completed": result["requests"],
        "errors": result["errors"],
        "error_kinds": result["error_kinds"],
        "seconds": result["seconds"],
        "stream_p50_s": round((result["p50_ms"] or 0) / 1000, 2),
        "stream_max_s": round((result["max_ms"] or 0) / 1000, 2),
        "rss_before_mb": before,
        "rss_max_sampled_mb": round(max(samples) / 1024, 1) if samples else after,
        "rss_peak_mb": _rss_mb(pid, "VmHWM"),
    }


def _count_rows(database_url: str, expected: int, timeout: float = 10) -> int:
    def count() -> int:
        with psycopg.connect(database_url) as conn:
            row = conn.execute("SELECT count(*) FROM ai_backend.llm_requests").fetchone()
            return int(row[0]) if row else 0

    with contextlib.suppress(TimeoutError):
        wait_until(lambda: count() >= expected, timeout, "the usage rows")
    return count()


# -- the report -------------------------------------------------------------------------------------


def _table(results: dict[str, Any], summary: dict[str, Any], burst: dict[str, Any]) -> str:
    lines = [
        f"{'mode':9} {'conns':>5} {'target':13} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'ttft p50':>9}"
        f" {'cpu ms/req':>10} {'errors':>6}",
    ]
    for mode in ("complete", "stream"):
        for conns in ("1", "16"):
            for target in TARGETS:
                r = results[mode][conns][target]
                ttft = f"{r['ttft_p50_ms']:.3f}" if r["ttft_p50_ms"] is not None else "-"
                cpu = f"{r['cpu_ms_per_request']:.3f}" if "cpu_ms_per_request" in r else "-"
                lines.append(
                    f"{mode:9} {conns:>5} {target:13} {r['rps']:>8.1f} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f}"
                    f" {ttft:>9} {cpu:>10} {r['errors']:>6}"
                )
    lines.append("")
    for name, value in summary.items():
        lines.append(f"{name:48} {value}")
    lines.append("")
    lines.append(
        f"1,000 slow streams: {burst['completed']}/{burst['streams']} completed ({burst['errors']} errors) in "
        f"{burst['seconds']:.1f} s; worker RSS {burst['rss_before_mb']} MB before, peak {burst['rss_peak_mb']} MB"
        f" (limit {RSS_LIMIT_MB})"
    )
    return "\n".join(lines)


def _measure(
    plan: dict[str, dict[str, Any]], target: str, mode: str, conns: int, pid: int | None, **options: Any
) -> dict[str, Any]:
    """One load run; with the server's worker pid, also its CPU time per request (warm-up included)."""
    url, body, headers, marker = plan[target][mode]
    before = cpu_seconds(pid) if pid else 0.0
    result = load(url, body, headers, marker, connections=conns, **options)
    if pid:
        spent = cpu_seconds(pid) - before
        result["cpu_ms_per_request"] = round(spent * 1000 / max(1, result["sent"]), 3)
    return result


def run(
    out_dir: Path, seconds: float = 4.0, warmup: float = 1.0, streams: int = 1000, rounds: int = 3
) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    service_headers = tokens.headers("bench-user", ttl=24 * 3600)
    with (
        database() as (database_url, redis_url),
        fake_openrouter(KEY, max_recorded=100) as fake,
        _relay(fake, "create") as (relay_create, relay_create_pid),
        _relay(fake, "post") as (relay_post, relay_post_pid),
        _service(fake, database_url, redis_url, out_dir / "bench-llm-api.log") as service,
    ):
        urls = {"fake": fake, "relay_create": relay_create}
        urls |= {"relay_post": relay_post, "service": service.url}
        pids = {"fake": None, "relay_create": relay_create_pid, "relay_post": relay_post_pid}
        pids["service"] = pids["openai"] = child_pid(service.process)
        plan = _requests(urls, service_headers)
        results: dict[str, Any] = {"complete": {"1": {}, "16": {}}, "stream": {"1": {}, "16": {}}}
        sent_to_service = 0
        for mode in ("complete", "stream"):
            for conns in (1, 16):
                # Targets take turns, `rounds` times; each target's best round counts (the machine is
                # shared: a round disturbed by something else is not the stack's speed). Best: the
                # lowest p50 at 1 connection (latency), the most requests/s at 16 (throughput).
                for _ in range(rounds):
                    for target in TARGETS:
                        result = _measure(
                            plan, target, mode, conns, pids[target], seconds=seconds, warmup=warmup
                        )
                        if target in ("service", "openai"):
                            sent_to_service += result["sent"]
                        best = results[mode][str(conns)].get(target)
                        if best is None or _better(result, best, conns):
                            results[mode][str(conns)][target] = result
        burst = _burst(service, service_headers, streams)
        sent_to_service += streams
        rows = _count_rows(database_url, sent_to_service)
    summary = _summary(results, burst, rows, sent_to_service)
    print(_table(results, summary, burst), flush=True)
    return {"results": results, "summary": summary, "streams_1000": burst}


def _better(result: dict[str, Any], best: dict[str, Any], conns: int) -> bool:
    if conns == 1:
        return bool(result["p50_ms"] < best["p50_ms"])
    return bool(result["rps"] > best["rps"])


def _summary(results: dict[str, Any], burst: dict[str, Any], rows: int, sent: int) -> dict[str, Any]:
    one = {mode: results[mode]["1"] for mode in ("complete", "stream")}
    sixteen = {mode: results[mode]["16"] for mode in ("complete", "stream")}
    added_complete = one["complete"]["service"]["p50_ms"] - one["complete"]["fake"]["p50_ms"]
    added_ttft = one["stream"]["service"]["ttft_p50_ms"] - one["stream"]["fake"]["ttft_p50_ms"]
    added_stream_p99 = one["stream"]["service"]["p99_ms"] - one["stream"]["fake"]["p99_ms"]
    summary: dict[str, Any] = {
        "complete p50 added at 1 conn (ms, target <= 2)": round(added_complete, 3),
        "complete p99 added at 1 conn (ms)": round(
            one["complete"]["service"]["p99_ms"] - one["complete"]["fake"]["p99_ms"], 3
        ),
        "stream TTFT p50 added at 1 conn (ms, target <= 2)": round(added_ttft, 3),
        "stream p99 added at 1 conn (ms)": round(added_stream_p99, 3),
    }
    for mode in ("complete", "stream"):
        for relay in ("relay_create", "relay_post"):
            ratio = sixteen[mode]["service"]["rps"] / sixteen[mode][relay]["rps"]
            summary[f"{mode} req/s at 16: service / {relay} (target >= 0.7)"] = round(ratio, 3)
            cpu = sixteen[mode][relay]["cpu_ms_per_request"] / sixteen[mode]["service"]["cpu_ms_per_request"]
            summary[f"{mode} CPU per request at 16: {relay} / service"] = round(cpu, 3)
    for mode in ("complete", "stream"):
        face, native = sixteen[mode]["openai"], sixteen[mode]["service"]
        summary[f"{mode} req/s at 16: /v1 / native (target >= 0.95)"] = round(face["rps"] / native["rps"], 3)
        summary[f"{mode} CPU per request at 16: /v1 / native"] = round(
            face["cpu_ms_per_request"] / native["cpu_ms_per_request"], 3
        )
        figure = "p50_ms" if mode == "complete" else "ttft_p50_ms"
        added = one[mode]["openai"][figure] - one[mode]["relay_post"][figure]
        summary[f"{mode} {figure[:-3]} added over relay_post at 1 conn, /v1 (ms, target <= 2)"] = round(
            added, 3
        )
        added = one[mode]["openai"][figure] - one[mode]["service"][figure]
        summary[f"{mode} {figure[:-3]} added over native at 1 conn, /v1 (ms)"] = round(added, 3)
    summary["usage rows stored / service requests sent"] = f"{rows} / {sent}"
    summary["1,000 streams all completed"] = burst["completed"] == burst["streams"]
    summary[f"worker peak RSS <= {RSS_LIMIT_MB} MB"] = burst["rss_peak_mb"] <= RSS_LIMIT_MB
    return summary


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.bench_llm")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results")
    args = parser.parse_args()
    print(json.dumps(run(args.out, seconds=args.seconds, streams=args.streams, rounds=args.rounds), indent=2))
