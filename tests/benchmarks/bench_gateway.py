"""What the LLM gateway's budgets and prompt caching cost and save (issue 18), against baselines in the
same run.

    uv run python -m tests.benchmarks bench_gateway        (or: just bench gateway)

Parties, each its own process on loopback: the fake OpenRouter, the bare SDK relay (``llm_relay``, the
SDK's ``post``), and the service twice: ``plain`` (no budget, no cache markers: LLM_CACHE_MIN_CHARS=0) and
``gateway`` (BUDGET_USD_PER_USER_MONTH set, so every call is admitted and settled in Redis; cache markers
on). Both are otherwise the same production settings as bench_llm's service.

1. Overhead: /complete and /stream at 1 connection (p50) and 16 (requests/s), the targets taking turns for
   three rounds, each one's best round counting. Targets: budgets and caching add <= 0.3 ms to the p50
   (gateway - plain at 1 connection), and the gateway keeps >= 100% of the bare relay's requests/s at 16.
2. Caching: one analysis (session_summary over a ~48,000-character transcript) sent 8 times in a row to
   each service; the fake charges cache reads at 0.1x and waits 20 ms per 1,000 uncached prompt tokens
   before answering (prefill). Reported: latency and cost of the first call and the median repeat.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.benchmarks.bench_llm import KEY, _relay, _requests
from tests.benchmarks.common import ROOT, database, fake_openrouter, load, service_env
from tests.support import tokens
from tests.support.processes import ApiServer, child_pid, cpu_seconds

TARGETS = ("relay_post", "plain", "gateway")
PREFILL = '[[fake:{"prefill_seconds_per_1k_tokens": 0.02}]]'
TRANSCRIPT = "\n".join(
    f"Coach: how did week {i} of the plan go? Client: I ran {i % 7 + 2} times, slept well, ate better."
    for i in range(500)
)  # ~48,000 characters, ~12,000 prompt tokens as the fake counts them
REPEATS = 8
VARIANTS = {
    "plain": {"LLM_CACHE_MIN_CHARS": "0"},
    "gateway": {"BUDGET_USD_PER_USER_MONTH": "1000000", "BUDGET_RESERVE_USD": "0.01"},
}


@contextlib.contextmanager
def _service(name: str, upstream: str, database_url: str, redis_url: str, log: Path) -> Iterator[ApiServer]:
    env = service_env(
        database_url,
        redis_url,
        OPENROUTER_BASE_URL=upstream,
        OPENROUTER_API_KEY=KEY,
        DB_POOL_MAX="4",
        **VARIANTS[name],
    )
    server = ApiServer(env, workers=1, log_path=log)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _overhead(
    plan: dict[str, dict[str, Any]], pids: dict[str, int], seconds: float, rounds: int
) -> dict[str, Any]:
    results: dict[str, Any] = {"complete": {"1": {}, "16": {}}, "stream": {"1": {}, "16": {}}}
    for mode in ("complete", "stream"):
        for conns in (1, 16):
            for _ in range(rounds):
                for target in TARGETS:
                    url, body, headers, marker = plan[target][mode]
                    before = cpu_seconds(pids[target])
                    result = load(url, body, headers, marker, connections=conns, seconds=seconds, warmup=1.0)
                    spent = cpu_seconds(pids[target]) - before
                    result["cpu_ms_per_request"] = round(spent * 1000 / max(1, result["sent"]), 3)
                    best = results[mode][str(conns)].get(target)
                    better = (
                        best is None
                        or (conns == 1 and result["p50_ms"] < best["p50_ms"])
                        or (conns == 16 and result["rps"] > best["rps"])
                    )
                    if better:
                        results[mode][str(conns)][target] = result
    return results


def _caching(url: str, headers: dict[str, str]) -> dict[str, Any]:
    body = {"task": "session_summary", "input": f"{TRANSCRIPT}\n{PREFILL}"}
    calls = []
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        for _ in range(REPEATS):
            started = time.perf_counter()
            response = client.post("/api/v1/llm/complete", json=body)
            elapsed = (time.perf_counter() - started) * 1000
            response.raise_for_status()
            calls.append((elapsed, response.json()["usage"]["cost_usd"]))
    repeats = calls[1:]
    return {
        "first_ms": round(calls[0][0], 1),
        "first_cost_usd": round(calls[0][1], 6),
        "repeat_p50_ms": round(statistics.median(c[0] for c in repeats), 1),
        "repeat_cost_usd": round(statistics.median(c[1] for c in repeats), 6),
    }


def run(out_dir: Path, seconds: float = 4.0, rounds: int = 3) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    headers = tokens.headers("bench-user", ttl=24 * 3600)
    with (
        database() as (database_url, redis_url),
        fake_openrouter(KEY, max_recorded=100) as fake,
        _relay(fake, "post") as (relay_post, relay_pid),
        _service("plain", fake, database_url, redis_url, out_dir / "bench-gateway-plain.log") as plain,
        _service("gateway", fake, database_url, redis_url, out_dir / "bench-gateway-on.log") as gateway,
    ):
        urls = {"fake": fake, "relay_create": relay_post, "relay_post": relay_post, "service": plain.url}
        plan = _requests(urls, headers)
        plan["plain"] = plan.pop("service")
        plan["gateway"] = {
            mode: (url.replace(plain.url, gateway.url), *rest) for mode, (url, *rest) in plan["plain"].items()
        }
        pids = {
            "relay_post": relay_pid,
            "plain": child_pid(plain.process),
            "gateway": child_pid(gateway.process),
        }
        overhead = _overhead(plan, pids, seconds, rounds)
        caching = {
            "without_markers": _caching(plain.url, headers),
            "with_markers": _caching(gateway.url, headers),
        }
    one = {mode: overhead[mode]["1"] for mode in ("complete", "stream")}
    sixteen = {mode: overhead[mode]["16"] for mode in ("complete", "stream")}
    summary = {
        "complete p50 added by budgets+caching at 1 conn (ms, target <= 0.3)": round(
            one["complete"]["gateway"]["p50_ms"] - one["complete"]["plain"]["p50_ms"], 3
        ),
        "stream TTFT p50 added by budgets+caching at 1 conn (ms)": round(
            one["stream"]["gateway"]["ttft_p50_ms"] - one["stream"]["plain"]["ttft_p50_ms"], 3
        ),
        "complete req/s at 16: gateway / relay_post (target >= 1.0)": round(
            sixteen["complete"]["gateway"]["rps"] / sixteen["complete"]["relay_post"]["rps"], 3
        ),
        "stream req/s at 16: gateway / relay_post (target >= 1.0)": round(
            sixteen["stream"]["gateway"]["rps"] / sixteen["stream"]["relay_post"]["rps"], 3
        ),
        "complete req/s at 16: gateway / plain": round(
            sixteen["complete"]["gateway"]["rps"] / sixteen["complete"]["plain"]["rps"], 3
        ),
        "complete CPU ms/request at 16: gateway - plain": round(
            sixteen["complete"]["gateway"]["cpu_ms_per_request"]
            - sixteen["complete"]["plain"]["cpu_ms_per_request"],
            3,
        ),
        "repeated analysis cost: with / without markers": round(
            caching["with_markers"]["repeat_cost_usd"] / caching["without_markers"]["repeat_cost_usd"], 3
        ),
        "repeated analysis latency p50: with / without markers": round(
            caching["with_markers"]["repeat_p50_ms"] / caching["without_markers"]["repeat_p50_ms"], 3
        ),
    }
    lines = [
        f"{'mode':9} {'conns':>5} {'target':11} {'req/s':>8} {'p50 ms':>8} {'ttft p50':>9} {'cpu ms/req':>10}"
    ]
    for mode in ("complete", "stream"):
        for conns in ("1", "16"):
            for target in TARGETS:
                r = overhead[mode][conns][target]
                ttft = f"{r['ttft_p50_ms']:.3f}" if r["ttft_p50_ms"] is not None else "-"
                lines.append(
                    f"{mode:9} {conns:>5} {target:11} {r['rps']:>8.1f} {r['p50_ms']:>8.3f} {ttft:>9}"
                    f" {r['cpu_ms_per_request']:>10.3f}"
                )
    lines += ["", json.dumps(caching, indent=2), ""]
    lines += [f"{name:64} {value}" for name, value in summary.items()]
    print("\n".join(lines), flush=True)
    return {"overhead": overhead, "caching": caching, "summary": summary}


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.bench_gateway")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results")
    args = parser.parse_args()
    print(json.dumps(run(args.out, seconds=args.seconds, rounds=args.rounds)["summary"], indent=2))
