"""An aiohttp load generator for the benchmarks, run in its own process; prints one JSON result line.

    python -m tests.benchmarks.loadgen --url URL --body JSON [--header K:V ...] [--stream MARKER]
        [--status 200] (--connections N --seconds S [--warmup W] [--max-requests M]  |  --burst N)

Closed loop: each of N connections POSTs its next request when the previous answer is complete, for S
seconds after W seconds of warm-up (not counted); an answer with another status than ``--status`` is an
error. ``--stream MARKER``: the answer is an event stream and the time to first token is when MARKER first
appears. ``--burst N``: N requests at once, each on its own connection, all awaited. Loopback only: the
URL must be on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from tests.benchmarks.common import percentile


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.url: str = args.url
        self.body: bytes = args.body.encode()
        self.headers = {"Content-Type": "application/json"}
        for header in args.header:
            name, _, value = header.partition(":")
            self.headers[name.strip()] = value.strip()
        self.marker: bytes | None = args.stream.encode() if args.stream else None
        self.status: int = args.status
        self.latencies: list[float] = []
        self.ttfts: list[float] = []
        self.errors: list[str] = []
        self.sent = 0
        self.recording = False

    async def one(self, session: aiohttp.ClientSession) -> None:
        self.sent += 1
        started = time.perf_counter()
        first: float | None = None
        try:
            async with session.post(self.url, data=self.body, headers=self.headers) as response:
                if self.marker is None:
                    await response.read()
                else:
                    async for chunk in response.content.iter_any():
                        if first is None and self.marker in chunk:
                            first = time.perf_counter()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            if self.recording:
                self.errors.append(type(exc).__name__)
            return
        ended = time.perf_counter()
        if not self.recording:
            return
        if status != self.status or (self.marker is not None and first is None):
            self.errors.append(f"status {status}" if status != self.status else "no token")
            return
        self.latencies.append(ended - started)
        if first is not None:
            self.ttfts.append(first - started)

    async def loop(self, session: aiohttp.ClientSession, stop_at: float, max_requests: int) -> None:
        while time.perf_counter() < stop_at and len(self.latencies) + len(self.errors) < max_requests:
            await self.one(session)

    def result(self, seconds: float) -> dict[str, Any]:
        ms = [v * 1000 for v in self.latencies]
        ttft = [v * 1000 for v in self.ttfts]
        return {
            "requests": len(self.latencies),
            "errors": len(self.errors),
            "error_kinds": sorted(set(self.errors))[:5],
            "sent": self.sent,
            "seconds": round(seconds, 3),
            "rps": round(len(self.latencies) / seconds, 1) if seconds else 0.0,
            "p50_ms": _round(percentile, ms, 0.5),
            "p99_ms": _round(percentile, ms, 0.99),
            "mean_ms": _round(statistics.fmean, ms),
            "max_ms": _round(max, ms),
            "ttft_p50_ms": _round(percentile, ttft, 0.5),
            "ttft_p99_ms": _round(percentile, ttft, 0.99),
        }


def _round(figure: Callable[..., float], values: list[float], *args: float) -> float | None:
    """``figure(values, *args)`` to the microsecond; None without values."""
    return round(figure(values, *args), 3) if values else None


async def main(args: argparse.Namespace) -> dict[str, Any]:
    if urlsplit(args.url).hostname not in ("127.0.0.1", "localhost"):
        raise SystemExit("loopback URLs only")
    run = Run(args)
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    if args.burst:
        connector = aiohttp.TCPConnector(limit=0, force_close=True)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            run.recording = True
            started = time.perf_counter()
            await asyncio.gather(*(run.one(session) for _ in range(args.burst)))
            return run.result(time.perf_counter() - started)
    connector = aiohttp.TCPConnector(limit=args.connections)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        if args.warmup > 0:
            stop = time.perf_counter() + args.warmup
            await asyncio.gather(*(run.loop(session, stop, 10**9) for _ in range(args.connections)))
        run.recording = True
        started = time.perf_counter()
        stop = started + args.seconds
        await asyncio.gather(*(run.loop(session, stop, args.max_requests) for _ in range(args.connections)))
        return run.result(time.perf_counter() - started)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.loadgen")
    parser.add_argument("--url", required=True)
    parser.add_argument("--body", required=True)
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--stream", default=None, help="the byte marker of the first token")
    parser.add_argument("--status", type=int, default=200, help="the status of a successful answer")
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--max-requests", type=int, default=200_000)
    parser.add_argument("--burst", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=120.0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    print(json.dumps(asyncio.run(main(parse()))), flush=True)
    sys.exit(0)
