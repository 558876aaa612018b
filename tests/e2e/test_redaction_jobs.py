"""Redaction in jobs: an analysis job, and a ``then`` analysis of an extracted document (its
``then_options``), on the API on Granian, a real worker and the fake OpenRouter, which records what it got."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.fakes.openrouter import FakeOpenRouter, Reply
from tests.support.jobs import accepted_id, submit_analysis, upload, wait_for_job

pytestmark = pytest.mark.usefixtures("job_worker")

NAMES = ["Sarah Lee", "Tom Okafor"]
RAW = ("Sarah", "Okafor", "7700 900123", "tom.okafor@example.org")
ANSWER = "[PERSON_1] will ask [PERSON_2] ([EMAIL_1]) to call [PHONE_1]."
RESTORED = "Sarah Lee will ask Tom Okafor (tom.okafor@example.org) to call +44 7700 900123."


def _sent(fake: FakeOpenRouter, marker: str) -> str:
    bodies = [json.dumps(r.body) for r in fake.requests if marker in json.dumps(r.body)]
    assert bodies, "the fake got no request for this job"
    return "\n".join(bodies)


def test_an_analysis_job_sends_placeholders_and_stores_the_restored_answer(
    api_server_url: str, fake_openrouter: FakeOpenRouter
) -> None:
    marker = uuid.uuid4().hex
    fake_openrouter.enqueue(Reply(content=ANSWER))
    text = f"Session {marker}. Sarah Lee: Tom Okafor is on +44 7700 900123 and tom.okafor@example.org."
    response = submit_analysis(
        api_server_url,
        {"task": "session_summary", "text": text, "options": {"redact": True, "redact_names": NAMES}},
    )
    job = wait_for_job(api_server_url, accepted_id(response))
    assert job["status"] == "succeeded", job
    assert job["result"]["content"] == RESTORED
    sent = _sent(fake_openrouter, marker)
    for raw in RAW:
        assert raw not in sent, raw


def test_then_analyses_of_a_document_carry_its_redaction(
    api_server_url: str, fake_openrouter: FakeOpenRouter
) -> None:
    marker = uuid.uuid4().hex
    document = (
        f"# Session notes {marker}\n\nSarah Lee said Tom Okafor will call on +44 7700 900123.\n\n"
        "Write to tom.okafor@example.org with the plan.\n"
    ).encode()
    fake_openrouter.enqueue(Reply(content=ANSWER))
    options = {"then": ["session_summary"], "then_options": {"redact": True, "redact_names": NAMES}}
    job_id = accepted_id(upload(api_server_url, "extraction", "notes.md", document, options))
    extraction = wait_for_job(api_server_url, job_id, timeout=60)
    assert extraction["status"] == "succeeded", extraction
    [follow_up] = extraction["result"]["follow_ups"]

    analysis = wait_for_job(api_server_url, follow_up["job_id"], timeout=30)
    assert analysis["status"] == "succeeded", analysis
    assert analysis["result"]["content"] == RESTORED
    sent = _sent(fake_openrouter, marker)
    for raw in RAW:
        assert raw not in sent, raw
