"""The job timing settings must agree, or a dead worker's redelivered job is dropped (and recovered only by
the sweep) or a live job is taken over: checked when the settings load."""

from __future__ import annotations

import pytest

from xenios_ai.settings import SettingsError
from xenios_ai.settings_load import load_settings


def test_the_defaults_let_a_redelivered_job_find_its_dead_attempt_stale() -> None:
    settings = load_settings({}, dotenv=False)
    # Dramatiq redelivers after BROKER_HEARTBEAT_TIMEOUT_MS; by then the job's heartbeat is that old,
    # less the worker's last broker poll (about a second), and the claim needs it older than stale.
    assert settings.stale_job_seconds + 2 <= settings.broker_heartbeat_timeout_ms / 1000
    assert settings.stale_job_seconds >= 2 * settings.worker_heartbeat_seconds


def test_a_broker_timeout_shorter_than_stale_plus_a_margin_is_refused() -> None:
    with pytest.raises(SettingsError, match=r"^BROKER_HEARTBEAT_TIMEOUT_MS \(15000\) must be at least"):
        load_settings({"STALE_JOB_SECONDS": "30"}, dotenv=False)


def test_a_stale_limit_a_missed_heartbeat_would_reach_is_refused() -> None:
    with pytest.raises(SettingsError, match=r"^STALE_JOB_SECONDS \(12\) must be at least twice"):
        load_settings({"WORKER_HEARTBEAT_SECONDS": "10"}, dotenv=False)


def test_consistent_custom_timings_load() -> None:
    env = {"WORKER_HEARTBEAT_SECONDS": "0.5", "STALE_JOB_SECONDS": "3", "BROKER_HEARTBEAT_TIMEOUT_MS": "5000"}
    settings = load_settings(env, dotenv=False)
    assert (settings.stale_job_seconds, settings.broker_heartbeat_timeout_ms) == (3.0, 5000)
