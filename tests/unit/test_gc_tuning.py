"""The collector settings of long-running processes (`xenios_ai.gc_tuning`)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from xenios_ai.gc_tuning import YOUNG_THRESHOLD, settle


@pytest.fixture
def default_collector() -> Iterator[None]:
    """CPython's defaults for the test, then the process's settings back (frozen objects stay unfrozen:
    that only costs the rest of the test run some collector time)."""
    threshold = gc.get_threshold()
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("default_collector")
def test_settle_freezes_what_lives_now_and_collects_young_objects_less_often() -> None:
    kept = [object() for _ in range(10)]  # built at start-up
    settle()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (YOUNG_THRESHOLD, 10, 10)
    frozen = gc.get_freeze_count()

    cycle: list[object] = []
    cycle.append(cycle)  # garbage made after start-up is still collected
    del cycle
    assert gc.collect() >= 1
    assert gc.get_freeze_count() == frozen
    assert kept


@pytest.mark.usefixtures("default_collector")
def test_a_later_settle_freezes_what_was_built_since_unless_first_only() -> None:
    settle()
    frozen = gc.get_freeze_count()
    engine = [[index] for index in range(1000)]  # e.g. an engine built lazily after boot

    settle(first_only=True)
    assert gc.get_freeze_count() == frozen
    settle()
    assert gc.get_freeze_count() >= frozen + len(engine)
