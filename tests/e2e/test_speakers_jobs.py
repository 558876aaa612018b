"""Speaker-attributed transcription jobs over HTTP: several files as tracks, their limits, the transcript
files, and the labelled text a follow-up analysis receives (a real worker with tiny.en, the fake
OpenRouter). The recordings come from tests/support/speakers_audio.py (the ``two_voices`` fixture)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import AsyncTestClient

from tests.fakes.openrouter import FakeOpenRouter
from tests.support import tokens
from tests.support.config import make_settings
from tests.support.jobs import accepted_id, job_events, wait_for_job
from tests.support.processes import WorkerProcess
from tests.support.speakers_audio import TRACK_OFFSET, Dialogue
from xenios_ai.api.app import create_app

TRACKS = {"speakers": ["Coach", "Client"], "track_offsets": [0, TRACK_OFFSET]}


def files(*paths: Path) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("file", (p.name, p.read_bytes(), "application/octet-stream")) for p in paths]


@pytest.fixture(scope="module")
def small_limit(fresh_env: Callable[..., dict[str, str]]) -> Any:
    """No worker serves it; uploads up to 600 kB (each track fits, both together do not)."""
    return make_settings(fresh_env(), transcription_max_upload_bytes=600_000)


async def test_several_files_are_tracks_within_the_limits(small_limit: Any, two_voices: Dialogue) -> None:
    coach, client = two_voices.path("coach.wav"), two_voices.path("client_track.wav")
    short = two_voices.path("short.wav")
    short.write_bytes(client.read_bytes()[:50_000])  # a valid WAV header, cut short: still sniffed as WAV
    storage = Path(small_limit.storage_dir)
    async with AsyncTestClient(create_app(small_limit)) as api:

        async def post(paths: list[Path], options: dict[str, Any] | None = None) -> Any:
            form = {"options": json.dumps(options)} if options is not None else {}
            return await api.post(
                "/api/v1/jobs/transcription", files=files(*paths), data=form, headers=tokens.headers()
            )

        response = await post([coach, short], TRACKS)
        assert response.status_code == 202, response.text
        job = (await api.get(response.headers["location"], headers=tokens.headers())).json()
        assert job["upload"]["filename"] == "coach.wav"
        assert job["upload"]["more"] == [{"filename": "short.wav", "format": "wav", "size": 50_000}]
        job_id = job["id"]
        kept = sorted(p.name for p in (storage / "jobs" / job_id).iterdir())
        assert kept == ["upload", "upload-2"]
        part = await api.get(f"/api/v1/jobs/{job_id}/result/upload-2", headers=tokens.headers())
        assert part.status_code == 404  # an upload is not a result part
        for fmt in ("txt", "srt", "vtt"):
            early = await api.get(f"/api/v1/jobs/{job_id}/result/transcript.{fmt}", headers=tokens.headers())
            assert (early.status_code, early.json()["code"]) == (409, "result_not_ready")

        before = sorted(p.name for p in (storage / "jobs").iterdir())
        refused = {
            "too big together": (await post([coach, client], TRACKS), 413, "payload_too_large"),
            "a name short": (await post([coach, short], {"speakers": ["Coach"]}), 422, "invalid_options"),
            "offsets for one": (await post([coach], {"track_offsets": [0]}), 422, "invalid_options"),
            "nine files": (await post([short] * 9), 422, "invalid_form"),
        }
        for case, (answer, status, code) in refused.items():
            assert (answer.status_code, answer.json()["code"]) == (status, code), (case, answer.text)
        # Nothing of a refused submit stays in storage.
        assert sorted(p.name for p in (storage / "jobs").iterdir() if any(p.iterdir())) == before


def test_two_tracks_become_one_labelled_transcript_for_the_analyses(
    api_server_url: str, job_worker: WorkerProcess, fake_openrouter: FakeOpenRouter, two_voices: Dialogue
) -> None:
    options = {**TRACKS, "then": ["session_summary"]}
    response = httpx.post(
        f"{api_server_url}/api/v1/jobs/transcription",
        files=files(two_voices.path("coach.wav"), two_voices.path("client_track.wav")),
        data={"options": json.dumps(options)},
        headers=tokens.headers(),
        timeout=30,
    )
    job_id = accepted_id(response)
    final = job_events(api_server_url, job_id)[-1][1]
    assert final["status"] == "succeeded", final
    result = final["result"]
    assert result["speaker_source"] == "tracks"
    assert [s["name"] for s in result["speakers"]] == ["Coach", "Client"]
    assert [s["speaker"] for s in result["segments"]] == [line.speaker for line in two_voices.lines]
    assert "words" not in result["segments"][0]  # not asked for

    def transcript(fmt: str) -> httpx.Response:
        url = f"{api_server_url}/api/v1/jobs/{job_id}/result/transcript.{fmt}"
        return httpx.get(url, headers=tokens.headers(), timeout=10)

    text = transcript("txt")
    assert text.headers["content-type"].startswith("text/plain")
    lines = text.text.splitlines()
    assert [line.split(": ", 1)[0] for line in lines] == [line.speaker for line in two_voices.lines]
    assert lines[0].startswith("Coach: Good morning")
    vtt = transcript("vtt")
    assert vtt.headers["content-type"].startswith("text/vtt")
    assert vtt.text.startswith("WEBVTT\n\n00:00:0")
    assert vtt.text.count("<v Client>") == 2
    srt = transcript("srt").text
    assert srt.startswith("1\n00:00:0")
    assert "\nClient: It went well" in srt
    other = httpx.get(
        f"{api_server_url}/api/v1/jobs/{job_id}/result/transcript.txt", headers=tokens.headers("user-2")
    )
    assert other.status_code == 404

    # The analysis got the labelled transcript, and its prompt says how to read the labels.
    (follow_up,) = result["follow_ups"]
    analysis = wait_for_job(api_server_url, follow_up["job_id"], timeout=30)
    assert analysis["status"] == "succeeded", analysis
    sent = [r.body for r in fake_openrouter.requests if "Client: It went well" in json.dumps(r.body)]
    assert sent, [r.body for r in fake_openrouter.requests]
    messages = sent[-1]["messages"]
    assert "speaker's name and a colon" in messages[0]["content"]
    assert messages[-1]["content"].startswith("Coach: Good morning")
