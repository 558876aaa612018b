"""The OpenAI-compatible face (/v1) driven by real Node clients: the `openai` npm client and the Vercel AI
SDK (`ai` + `@ai-sdk/openai-compatible`: generateText, streamText, generateObject).

tests/clients/node holds the clients (package.json + package-lock.json; `npm ci --prefix
tests/clients/node` installs them, .ci/run does) and driver.mjs, ONE Node process for this module: each
test scripts the fake OpenRouter, sends the driver a case and asserts on what the SDK returned or raised.
"""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.openrouter import DEFAULT_CONTENT, FakeOpenRouter, Reply
from tests.support import tokens
from tests.support.node import ensure_node_modules

NODE_DIR = Path(__file__).parent / "node"
OPUS = "anthropic/claude-opus-4.5"
SONNET = "anthropic/claude-sonnet-4"
USER = "user-openai-node"
HELLO = [{"role": "user", "content": "How did my week go?"}]
WORDS = len(DEFAULT_CONTENT.split())

Driver = Callable[..., Any]


def fake(text: str = "Tell me something.", **reply: Any) -> list[dict[str, str]]:
    """A user message that makes the fake answer with this `Reply`."""
    return [{"role": "user", "content": f"{text} [[fake:{json.dumps(reply)}]]"}]


@pytest.fixture(scope="module")
def node(openai_face_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Driver]:
    """``node(case, **args)``: one call of driver.mjs, answered by the SDK's result (or raised error)."""
    executable = shutil.which("node")
    assert executable is not None, "Node 20+ is needed (the SDK tests drive the real Node clients)"
    ensure_node_modules(NODE_DIR)
    env = {
        "PATH": str(Path(executable).parent),
        "XENIOS_BASE_URL": openai_face_url,
        "XENIOS_JWT": tokens.hs256_token(USER),
        "XENIOS_API_KEY": tokens.API_KEY,
    }
    log = tmp_path_factory.mktemp("node") / "driver.stderr"
    process = subprocess.Popen(
        [executable, "driver.mjs"],
        cwd=NODE_DIR,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
        bufsize=1,
    )
    stdin, stdout = process.stdin, process.stdout
    assert stdin is not None
    assert stdout is not None
    answers: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in stdout:
            answers.put(line)
        answers.put("")  # the driver exited

    threading.Thread(target=read, daemon=True).start()
    calls = iter(range(1, 1_000_000))

    def call(case: str, **args: Any) -> Any:
        call_id = next(calls)
        stdin.write(json.dumps({"id": call_id, "case": case, "args": args}) + "\n")
        stdin.flush()
        try:
            line = answers.get(timeout=60)
        except queue.Empty:
            raise AssertionError(f"no answer from the Node driver for {case}") from None
        assert line, f"the Node driver exited: {log.read_text()[-2000:]}"
        answer = json.loads(line)
        assert answer["id"] == call_id
        assert answer["ok"], f"{case} failed in Node: {answer['error']}\n{answer.get('stack')}"
        return answer["result"]

    yield call
    stdin.close()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


# -- openai (npm) -------------------------------------------------------------------------------------


def test_openai_node_lists_the_tasks_as_models(node: Driver) -> None:
    result = node("openai.models")

    assert set(result["ids"]) == {
        "session_summary",
        "insight_generation",
        "chat",
        "intent_classification",
        "entity_extraction",
    }
    assert result["chat"]["owned_by"] == "xenios"


def test_openai_node_create_and_fallback_headers(node: Driver, fake_openrouter: FakeOpenRouter) -> None:
    result = node("openai.create", messages=HELLO, params={"max_completion_tokens": 100})
    completion = result["completion"]
    assert completion["choices"][0]["message"]["content"] == DEFAULT_CONTENT
    assert completion["model"] == OPUS
    assert completion["usage"]["completion_tokens"] == WORDS
    assert completion["usage"]["cost"] > 0
    assert result["request_id"] == result["headers"]["x-request-id"]
    assert result["headers"]["x-xenios-fallback-used"] == "false"

    fake_openrouter.enqueue(Reply(status=502), Reply(status=502), model=OPUS)
    fallback = node("openai.create", messages=HELLO)
    assert fallback["completion"]["model"] == SONNET
    assert fallback["headers"] == {
        "x-xenios-model": SONNET,
        "x-xenios-fallback-used": "true",
        "x-request-id": fallback["request_id"],
    }


def test_openai_node_stream_with_usage(node: Driver) -> None:
    result = node("openai.stream", messages=HELLO)

    assert result["error"] is None
    assert result["text"] == DEFAULT_CONTENT
    chunks = result["chunks"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == WORDS
    assert chunks[-1]["model"] == OPUS


def test_openai_node_a_cut_stream_raises_after_its_text(node: Driver) -> None:
    result = node("openai.stream", messages=fake(cut_after=3, token_delay=0.05))

    assert result["text"] == " ".join(DEFAULT_CONTENT.split()[:3])
    assert result["error"]["code"] == "upstream_disconnected"
    assert result["error"]["name"] == "APIError"


def test_openai_node_errors_are_the_sdks_classes(node: Driver) -> None:
    unsupported = node("openai.error", messages=HELLO, params={"stop": ["\n"]})
    assert unsupported["isAPIError"]
    assert (unsupported["name"], unsupported["status"], unsupported["param"]) == (
        "BadRequestError",
        400,
        "stop",
    )

    not_found = node("openai.error", model="gpt-4o", messages=HELLO)
    assert (not_found["name"], not_found["status"], not_found["code"]) == (
        "NotFoundError",
        404,
        "model_not_found",
    )

    bad_token = node("openai.error", messages=HELLO, jwt="not-a-jwt")
    assert (bad_token["name"], bad_token["status"], bad_token["code"]) == (
        "AuthenticationError",
        401,
        "invalid_token",
    )

    all_429 = node("openai.error", messages=fake(status=429, retry_after=0.1))
    assert (all_429["name"], all_429["status"], all_429["code"]) == (
        "InternalServerError",
        503,
        "upstream_unavailable",
    )


# -- Vercel AI SDK ------------------------------------------------------------------------------------


def test_ai_sdk_generate_text(node: Driver) -> None:
    result = node("ai.generateText", messages=HELLO, params={"temperature": 0.3, "maxOutputTokens": 200})

    assert result["error"] is None
    assert result["text"] == DEFAULT_CONTENT
    assert result["finishReason"] == "stop"
    assert result["modelId"] == OPUS
    assert result["usage"]["outputTokens"] == WORDS
    assert result["usage"]["inputTokens"] > 0
    assert result["headers"]["x-xenios-model"] == OPUS


def test_ai_sdk_stream_text_falls_back_from_a_hung_primary(
    node: Driver, fake_openrouter: FakeOpenRouter
) -> None:
    fake_openrouter.enqueue(Reply(hang=5), model=OPUS)  # past the first-token deadline (1 s here)

    result = node("ai.streamText", messages=HELLO)

    assert result["errors"] == []
    assert result["text"] == DEFAULT_CONTENT
    assert result["finishReason"] == "stop"
    assert result["usage"]["outputTokens"] == WORDS
    assert [r.model for r in fake_openrouter.requests] == [OPUS, SONNET]


def test_ai_sdk_stream_text_reports_a_cut_stream_as_an_error(node: Driver) -> None:
    result = node("ai.streamText", messages=fake(cut_after=3, token_delay=0.05))

    assert result["text"] == " ".join(DEFAULT_CONTENT.split()[:3])
    assert result["errors"]
    assert "disconnected" in json.dumps(result["errors"])


def test_ai_sdk_generate_object_on_a_typed_task(node: Driver, fake_openrouter: FakeOpenRouter) -> None:
    answer = {
        "intent": "goal_setting",
        "confidence": 0.8,
        "alternatives": [{"intent": "question", "confidence": 0.2}],
    }

    result = node("ai.generateObject", messages=fake("I want to run a 5k by June.", json=answer))

    assert result["error"] is None
    assert result["object"] == answer
    assert result["modelId"] == SONNET
    sent = fake_openrouter.requests[-1].body["response_format"]
    assert sent["type"] == "json_schema"
    assert set(sent["json_schema"]["schema"]["properties"]) == {"intent", "confidence", "alternatives"}


def test_ai_sdk_errors(node: Driver) -> None:
    unsupported = node("ai.generateText", messages=HELLO, params={"topP": 0.5})
    assert unsupported["error"]["status"] == 400
    assert "top_p" in unsupported["error"]["message"]

    unauthorized = node("ai.generateText", messages=HELLO, headers={})
    assert unauthorized["error"]["status"] == 401
    assert unauthorized["error"]["name"] == "APICallError"
