"""`jobs.broker` copies private parts of Dramatiq's Redis broker: the consumer's ``__next__`` (with its idle
sleep replaced by a wake-up) and the Lua ``dispatch`` script the `Enqueuer` calls with Dramatiq's own
argument order. Both are pinned here to the version they were copied from: an upgrade fails these tests
loudly until someone re-reads Dramatiq's code, updates the copies, and then the pins (and the range in
pyproject.toml)."""

from __future__ import annotations

import hashlib
import inspect

import dramatiq
from dramatiq.brokers.redis import _RedisConsumer, _scripts

TESTED_RANGE = ((2, 2, 1), (2, 3, 0))
"""[low, high): the Dramatiq versions whose internals `jobs.broker` was checked against."""
CONSUMER_NEXT_SHA256 = "b8245bc4ab8044d67d72216baca5e5be0d07fccce15c443a5887b6397c9906e1"
DISPATCH_SCRIPT_SHA256 = "ba4d872e4fb204ebc3f73ca4719265a9946d70e847856c125314f01a8c90540c"
UPGRADE = "Dramatiq changed: re-read jobs/broker.py's copies of its private internals, then update this test"


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:3] if part.isdigit())


def test_dramatiq_is_a_version_the_broker_copies_were_checked_against() -> None:
    low, high = TESTED_RANGE
    assert low <= _version(dramatiq.__version__) < high, f"Dramatiq {dramatiq.__version__}: {UPGRADE}"


def test_the_consumer_loop_copied_into_jobs_broker_is_unchanged() -> None:
    source = inspect.getsource(_RedisConsumer.__next__)
    assert hashlib.sha256(source.encode()).hexdigest() == CONSUMER_NEXT_SHA256, UPGRADE
    assert list(inspect.signature(_RedisConsumer.__init__).parameters) == [
        "self", "broker", "queue_name", "prefetch", "timeout",
    ], UPGRADE  # fmt: skip


def test_the_dispatch_script_the_enqueuer_calls_is_unchanged() -> None:
    assert hashlib.sha256(_scripts["dispatch"]).hexdigest() == DISPATCH_SCRIPT_SHA256, UPGRADE
