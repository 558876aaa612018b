"""What redaction adds per 10 KB of text (target: < 1 ms), against the unredacted call in the same run.

    uv run python -m tests.benchmarks redaction          (or: just bench redaction)

1. The step alone, in this process: redacting 10 KB (a typical coaching transcript with a few names and
   details, and a dense one with an identifier every ~25 characters, repeated or all distinct) and
   restoring an answer; the best of
   several rounds (the machine is shared: the best round is the one least disturbed).
2. The whole call: `LLMRouter.complete` against the fake OpenRouter (its own process, real HTTP), the
   same 10 KB prompt with and without ``redact`` + ``redact_names``, interleaved; medians and the
   difference.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

from tests.benchmarks.common import fake_openrouter
from tests.support.config import make_settings
from xenios_ai.llm.redaction import KINDS, Redactor
from xenios_ai.llm.router import LLMRouter
from xenios_ai.llm.types import Options

KEY = f"sk-or-v1-bench-{uuid.uuid4().hex}"
NAMES = ["Sarah Lee", "Tom Okafor", "Priya Shah"]
TYPICAL_LINE = (
    "Coach: How did the week go, Sarah? Sarah Lee: Better than the last one. I ran twice and slept more, "
    "and Tom came along on Sunday. We talked about keeping the routine when work gets busy. "
)
DENSE_LINE = (
    "Sarah Lee: mail tom.okafor@example.org or call +44 7700 900123; IBAN GB82 WEST 1234 5698 7654 32, "
    "card 4111 1111 1111 1111, SW1A 1AA, https://example.com/p?x=1. Priya said 2024-05-01 at 10.30. "
)
SIZE = 10 * 1024


def _distinct_line(n: int) -> str:
    """The dense line with different values each time (redaction memoises a repeated code)."""
    return (
        f"Sarah Lee: mail tom{n}.okafor@example.org or call +44 7700 9{n:05d}; card 4111 1111 1111 {1000 + n}, "
        f"SW{n % 9 + 1}A 1AA, https://example.com/p?x={n}. Priya said 2024-05-{n % 28 + 1:02d} at 10.{n % 60:02d}. "
    )


DENSE_DISTINCT = "".join(_distinct_line(n) for n in range(SIZE // 150))[:SIZE]
ROUNDS, PER_ROUND, CALLS = 9, 20, 200
TARGET_MS = 1.0


def _text(line: str) -> str:
    return (line * (SIZE // len(line) + 1))[:SIZE]


def _step_ms(text: str) -> dict[str, float]:
    answer = "[PERSON_1] and [PERSON_2] agreed; write to [EMAIL_1]. " * 20
    best_redact = best_restore = float("inf")
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(PER_ROUND):
            redactor = Redactor(KINDS, NAMES)
            redactor.redact(text)
        best_redact = min(best_redact, (time.perf_counter() - started) / PER_ROUND * 1000)
        started = time.perf_counter()
        for _ in range(PER_ROUND):
            redactor.restore(answer)
        best_restore = min(best_restore, (time.perf_counter() - started) / PER_ROUND * 1000)
    return {
        "redact_ms": round(best_redact, 3),
        "restore_ms": round(best_restore, 3),
        "replaced": redactor.replaced,
    }


async def _calls(base_url: str) -> dict[str, Any]:
    settings = make_settings(
        {"OPENROUTER_API_KEY": KEY, "OPENROUTER_BASE_URL": base_url, "ENVIRONMENT": "test"}
    )
    router = LLMRouter(settings)
    text = _text(TYPICAL_LINE)
    redacted = Options(redact=True, redact_names=NAMES)
    plain: list[float] = []
    with_redaction: list[float] = []
    try:
        for n in range(CALLS + 20):
            for options, into in ((None, plain), (redacted, with_redaction)):
                started = time.perf_counter()
                await router.complete("chat", input=text, options=options)
                if n >= 20:  # warm-up
                    into.append((time.perf_counter() - started) * 1000)
    finally:
        await router.aclose()
    p, r = statistics.median(plain), statistics.median(with_redaction)
    return {"plain_median_ms": round(p, 3), "redacted_median_ms": round(r, 3), "added_ms": round(r - p, 3)}


def run(out_dir: Path) -> dict[str, Any]:
    typical = _step_ms(_text(TYPICAL_LINE))
    dense = _step_ms(_text(DENSE_LINE))
    distinct = _step_ms(DENSE_DISTINCT)
    with fake_openrouter(KEY, max_recorded=10) as base_url:
        calls = asyncio.run(_calls(base_url))
    result = {
        "text_bytes": SIZE,
        "typical": typical,
        "dense": dense,
        "dense_distinct": distinct,
        "call": calls,
        "target_ms": TARGET_MS,
        "typical_met": typical["redact_ms"] + typical["restore_ms"] < TARGET_MS,
        "dense_met": dense["redact_ms"] + dense["restore_ms"] < TARGET_MS,
    }
    print(
        f"10 KB typical: redact {typical['redact_ms']} ms + restore {typical['restore_ms']} ms; dense: "
        f"{dense['redact_ms']} + {dense['restore_ms']} ms (distinct values: {distinct['redact_ms']} ms); whole call {calls['plain_median_ms']} ms -> "
        f"{calls['redacted_median_ms']} ms (+{calls['added_ms']} ms); target < {TARGET_MS} ms"
    )
    return result
