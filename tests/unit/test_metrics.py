"""Metric names and recorders, multi-process files, the metrics key, the job log's masking, and the
Grafana dashboard (every metric it queries is one the service exports)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from xenios_ai.llm.usage import UsageRecord
from xenios_ai.observability import exposition, metrics
from xenios_ai.observability.exposition import key_matches, process_metrics
from xenios_ai.observability.joblog import mask, secrets_of
from xenios_ai.observability.multiprocess import ENV, prepare_process_group, sweep_dead_processes
from xenios_ai.settings_load import load_settings

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "infra" / "grafana" / "xenios-ai.json"
NAME = re.compile(r"\bxenios_[a-z0-9_]+\b")


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_names_follow_prometheus_conventions() -> None:
    names = exposition.sample_names()
    assert "xenios_http_requests_total" in names
    assert "xenios_http_request_duration_seconds_bucket" in names
    assert "xenios_llm_cost_usd_total" in names
    assert "xenios_jobs" in names
    for name in names:
        assert re.fullmatch(r"xenios_[a-z0-9_]+", name), name
        assert not name.endswith("_total_total")
        assert not re.search(r"_(milli)?seconds?_ms|_ms\b|_milliseconds", name), (
            f"{name}: base units (seconds)"
        )


def test_http_requests_are_labelled_by_template_with_bounded_values() -> None:
    labels = {"method": "OTHER", "route": "unmatched", "status": "405"}
    before = sample("xenios_http_request_duration_seconds_count", **labels)
    metrics.observe_http("BREW", None, 405, 0.001)
    metrics.observe_http("PROPFIND", None, 405, 0.001)
    assert sample("xenios_http_request_duration_seconds_count", **labels) == before + 2
    metrics.observe_http("GET", "/api/v1/jobs/{job_id}", 200, 0.004)
    bucket = {"method": "GET", "route": "/api/v1/jobs/{job_id}", "status": "200", "le": "0.005"}
    assert sample("xenios_http_request_duration_seconds_bucket", **bucket) >= 1


def test_an_llm_request_is_recorded_from_its_usage_row() -> None:
    task, model = "unit_task", "unit/model-b"
    record = UsageRecord(
        created_at=0.0, request_id=None, owner=None, task=task, mode="stream", status="succeeded", model=model,
        fallback_used=True, prompt_tokens=120, completion_tokens=30, cost_usd=0.0042, latency_ms=2500.0,
        ttft_ms=400.0, attempts=[
            {"model": "unit/model-a", "duration_ms": 10.0, "error": "http_503", "status": 503},
            {"model": model, "duration_ms": 2400.0},
        ],
    )  # fmt: skip
    metrics.observe_llm(record)
    metrics.observe_llm(record)
    assert sample("xenios_llm_requests_total", task=task, model=model, outcome="succeeded") == 2
    assert sample("xenios_llm_tokens_total", task=task, model=model, type="prompt") == 240
    assert sample("xenios_llm_tokens_total", task=task, model=model, type="completion") == 60
    assert sample("xenios_llm_cost_usd_total", task=task, model=model) == pytest.approx(0.0084)
    assert sample("xenios_llm_request_duration_seconds_sum", task=task, model=model) == pytest.approx(5.0)
    assert sample("xenios_llm_time_to_first_token_seconds_bucket", task=task, model=model, le="0.5") == 2
    assert sample("xenios_llm_fallbacks_total", task=task, model=model) == 2
    assert sample("xenios_llm_attempt_failures_total", model="unit/model-a", error="http_503") == 2


def test_an_attempt_its_caller_abandoned_is_not_an_upstream_failure() -> None:
    model = "unit/model-c"
    record = UsageRecord(
        created_at=0.0, request_id=None, owner=None, task="unit_task", mode="stream", status="cancelled",
        model=model, fallback_used=False, prompt_tokens=None, completion_tokens=None, cost_usd=None,
        latency_ms=50.0, ttft_ms=None,
        attempts=[{"model": model, "duration_ms": 50.0, "error": "cancelled"}],
    )  # fmt: skip
    metrics.observe_llm(record)
    assert sample("xenios_llm_requests_total", task="unit_task", model=model, outcome="cancelled") == 1
    assert sample("xenios_llm_attempt_failures_total", model=model, error="cancelled") == 0


def test_the_metrics_key_is_the_service_key_or_its_own() -> None:
    settings = load_settings({"XENIOS_BACKEND_API_KEY": "k1,k2"}, dotenv=False)
    assert key_matches(settings, "k2", None)
    assert key_matches(settings, None, "Bearer k1")
    assert key_matches(settings, None, "bearer  k1 ")
    assert not key_matches(settings, None, "Basic k1")
    assert not key_matches(settings, "k3", None)
    assert not key_matches(settings, None, None)
    own = load_settings({"XENIOS_BACKEND_API_KEY": "k1", "METRICS_API_KEY": "scrape"}, dotenv=False)
    assert key_matches(own, None, "Bearer scrape")
    assert key_matches(own, "k1", None)
    assert not key_matches(load_settings({}, dotenv=False), "", None)


def _record_in(directory: Path, code: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-c", f"from xenios_ai.observability import metrics\n{code}"],
        env={**os.environ, ENV: str(directory)},
        check=True,
    )


def test_process_groups_are_prepared_and_merged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "restored-after-the-test")
    dead_pid = subprocess.Popen(["true"])
    dead_pid.wait()
    dead, live, other = (
        tmp_path / f"worker-{dead_pid.pid}",
        tmp_path / f"worker-{os.getppid()}",
        tmp_path / "notes",
    )
    for directory in (dead, live, other):
        directory.mkdir()
    settings = load_settings({"METRICS_DIR": str(tmp_path)}, dotenv=False)

    group = prepare_process_group(settings, "api")

    assert group == tmp_path / f"api-{os.getpid()}"
    assert group.is_dir()
    assert os.environ[ENV] == str(group)
    assert not dead.exists()
    assert live.is_dir()
    assert other.is_dir()

    # two processes of this group and one of another group on the host
    _record_in(group, 'metrics.observe_http("GET", "/health", 200, 0.01)')
    _record_in(
        group,
        'metrics.observe_http("GET", "/health", 200, 0.02)\nmetrics.observe_http("GET", "/health", 200, 0.03)',
    )
    _record_in(live, 'metrics.WORKER_MESSAGES.labels("llm", "job_analysis", "ok").inc(5)')

    def values(scope: str) -> dict[str, float]:
        return {
            s.name: s.value
            for family in process_metrics(scope)  # type: ignore[arg-type]
            for s in family.samples
            if s.labels.get("route") == "/health" or s.labels.get("actor") == "job_analysis"
        }

    host = values("host")
    assert host["xenios_http_requests_total"] == 3
    assert host["xenios_http_request_duration_seconds_sum"] == pytest.approx(0.06)
    assert host["xenios_worker_messages_total"] == 5
    group_only = values("group")
    assert group_only["xenios_http_requests_total"] == 3
    assert "xenios_worker_messages_total" not in group_only

    again = prepare_process_group(settings, "api")  # a restart of the same command starts empty
    assert again == group
    assert list(group.iterdir()) == []


def test_job_log_lines_never_show_a_configured_secret() -> None:
    settings = load_settings(
        {
            "XENIOS_BACKEND_API_KEY": "backend-key-1, backend-key-2",
            "OPENROUTER_API_KEY": "sk-or-v1-abcdef",
            "DATABASE_URL": "postgresql://u:pw-123456@db/x",
            "OPS_PASSWORD": "abc",  # too short to mask without mangling ordinary words
        },
        dotenv=False,
    )
    secrets = secrets_of(settings)
    text = "called with sk-or-v1-abcdef and backend-key-2 via postgresql://u:pw-123456@db/x abc"
    assert mask(text, secrets) == "called with *** and *** via *** abc"
    assert len(mask("x" * 5000, secrets)) == 2000


def test_the_grafana_dashboard_queries_only_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    exprs = [t["expr"] for p in panels if p["type"] != "row" for t in p["targets"]]
    assert all(t.get("refId") for p in panels if p["type"] != "row" for t in p["targets"])
    used = {name for expr in exprs for name in NAME.findall(expr)}
    assert used - exposition.sample_names() == set()
    for wanted in (
        "xenios_http_requests_total", "xenios_http_request_duration_seconds_bucket", "xenios_llm_requests_total",
        "xenios_llm_tokens_total", "xenios_llm_cost_usd_total", "xenios_llm_time_to_first_token_seconds_bucket",
        "xenios_llm_fallbacks_total", "xenios_jobs", "xenios_queue_messages", "xenios_workers_alive",
        "xenios_worker_heartbeat_age_seconds", "xenios_worker_messages_total", "xenios_job_attempts_total",
    ):  # fmt: skip
        assert wanted in used, f"the dashboard does not show {wanted}"
    assert all(p["datasource"]["uid"] == "${datasource}" for p in panels if p["type"] != "row")


def test_an_unusable_metrics_directory_costs_the_metrics_not_the_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, "unchanged")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    settings = load_settings({"METRICS_DIR": str(blocker / "metrics")}, dotenv=False)
    assert prepare_process_group(settings, "api") is None
    assert os.environ[ENV] == "unchanged"


def test_a_killed_process_leaves_no_ghost_work_in_progress(tmp_path: Path) -> None:
    """A worker process killed mid-message never runs `mark_process_dead`: its in-progress gauge stayed
    in the merged metrics until the group restarted. `sweep_dead_processes` (the supervisor calls it when a
    child stops) drops the dead process's live gauges and keeps the living ones."""
    group = tmp_path / "worker-1"
    group.mkdir()
    busy = 'metrics.WORKER_MESSAGES_IN_PROGRESS.labels("llm", "job_analysis").inc({})'
    live = subprocess.Popen(
        [sys.executable, "-c", f"import sys\nfrom xenios_ai.observability import metrics\n{busy.format(2)}\n"
         "print('busy', flush=True)\nsys.stdin.read()"],
        env={**os.environ, ENV: str(group)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert live.stdout is not None
        assert live.stdout.readline() == b"busy\n"
        killed = subprocess.Popen(
            [sys.executable, "-c", f"import os, signal\nfrom xenios_ai.observability import metrics\n"
             f"{busy.format(3)}\nos.kill(os.getpid(), signal.SIGKILL)"],
            env={**os.environ, ENV: str(group)},
        )  # fmt: skip
        assert killed.wait(30) == -signal.SIGKILL

        def in_progress() -> float:
            os.environ[ENV] = str(group)
            try:
                return sum(
                    s.value
                    for family in process_metrics("group")
                    for s in family.samples
                    if s.name == "xenios_worker_messages_in_progress"
                )
            finally:
                del os.environ[ENV]

        assert in_progress() == 5  # 3 of them ghosts
        assert sweep_dead_processes(group) == [killed.pid]
        assert in_progress() == 2
        assert sweep_dead_processes(group) == []
    finally:
        live.communicate(b"", timeout=30)
