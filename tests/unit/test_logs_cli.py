"""`xenios-ai logs`: JSON lines (plain or behind compose's prefix) shown readable and filtered."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from xenios_ai.__main__ import main
from xenios_ai.logs import Filter, lines_of, parse, render, show

JOB = "0f6c2c51-7d1e-4a55-9a7e-6c0f2b1d9e10"
OTHER_JOB = "9b1d4e22-0000-4000-8000-000000000000"


def record(msg: str, level: str = "INFO", **extra: Any) -> dict[str, Any]:
    return {
        "ts": "2026-05-04T10:11:12.345+00:00",
        "level": level,
        "msg": msg,
        "logger": "x",
        "pid": 7,
    } | extra


def line(msg: str, level: str = "INFO", **extra: Any) -> str:
    return json.dumps(record(msg, level, **extra))


STREAM = [
    "Dramatiq '2.2.1' is booting up.",
    line("worker ready", component="worker"),
    line("job started", component="worker", job_id=JOB, kind="analysis", queue="llm", actor="job_analysis"),
    "xenios-ai-worker-llm-1  | "
    + line("LLM attempt failed: http_503", "WARNING", job_id=JOB, kind="analysis", queue="llm", task="chat"),
    line("job succeeded", component="worker", job_id=OTHER_JOB, kind="extraction", queue="extraction"),
    line("GET /api/v1/jobs 200 3.1ms", component="http", request_id="req-abc123"),
    line("boom", "ERROR", component="api", error="ValueError: bad", traceback="Traceback ..."),
]


def shown(keep: Filter, stream: list[str] = STREAM) -> list[str]:
    out = io.StringIO()
    show(stream, keep, out)
    return out.getvalue().splitlines()


def test_a_record_is_one_readable_line() -> None:
    text = render(parse(STREAM[2]) or {})
    assert text == f"10:11:12.345 INFO    worker   [job={JOB} kind=analysis queue=llm] job started"
    assert render(record("boom", "ERROR", component="api", error="ValueError: bad")).endswith(
        "api      boom - ValueError: bad"
    )
    assert render(record("GET / 200", component="http", request_id="r1")) == (
        "10:11:12.345 INFO    http     [req=r1] GET / 200"
    )
    colored = render(parse(STREAM[6]) or {}, color=True)
    assert "\x1b[31mERROR" in colored


def test_compose_prefixes_and_other_lines() -> None:
    prefixed = parse(STREAM[3])
    assert prefixed is not None
    assert prefixed["level"] == "WARNING"
    assert parse("plain text") is None
    assert parse('{"not": "a log record"}') is None
    assert parse("{broken") is None
    everything = shown(Filter())
    assert everything[0] == "Dramatiq '2.2.1' is booting up."  # shown as it is without filters
    assert len(everything) == len(STREAM)


def test_filters() -> None:
    assert [t.split("] ", 1)[1] for t in shown(Filter(job=JOB[:8]))] == [
        "job started",
        "LLM attempt failed: http_503",
    ]
    assert len(shown(Filter(queue="extraction"))) == 1
    assert len(shown(Filter(kind="analysis"))) == 2
    assert shown(Filter(request="req-abc"))[0].endswith("GET /api/v1/jobs 200 3.1ms")
    assert [t.split()[1] for t in shown(Filter(level="WARNING"))] == ["WARNING", "ERROR"]
    assert shown(Filter(queue="nope")) == []


def test_the_command_reads_a_file_or_stdin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "worker.log"
    log.write_text("\n".join(STREAM) + "\n")
    monkeypatch.setenv("ENVIRONMENT", "production")  # needs no settings: this would not load
    assert main(["logs", "--job", JOB, "--level", "warning", str(log)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"10:11:12.345 WARNING x        [job={JOB} kind=analysis queue=llm] LLM attempt failed: http_503"
    ]
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(STREAM)))
    assert main(["logs", "--queue", "extraction"]) == 0
    assert "job succeeded" in capsys.readouterr().out
    assert main(["logs", str(tmp_path / "missing.log")]) == 2


def test_follow_shows_what_is_appended(tmp_path: Path) -> None:
    log = tmp_path / "api.log"
    log.write_text(line("first") + "\n")

    def append() -> None:
        time.sleep(0.1)
        with log.open("a") as out:
            out.write(line("second")[:20])  # half a line: not shown until its end arrives
            out.flush()
            time.sleep(0.1)
            out.write(line("second")[20:] + "\n")

    writer = threading.Thread(target=append)
    writer.start()
    with log.open() as stream:
        lines = lines_of(stream, follow=True, poll=0.01)
        assert parse(next(lines))["msg"] == "first"  # type: ignore[index]
        assert parse(next(lines))["msg"] == "second"  # type: ignore[index]
    writer.join()
