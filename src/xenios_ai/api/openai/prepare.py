"""What a /v1/chat/completions request asks of the router (`prepare`): the task, messages, options and
output checked against what we serve; every refusal is a 400 naming its parameter (see `api.openai.chat`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from xenios_ai.api.openai.errors import invalid, unsupported
from xenios_ai.api.openai.schemas import ChatCompletionRequest, ResponseFormat
from xenios_ai.api.schemas import MAX_PROMPT_CHARS
from xenios_ai.errors import InvalidInput
from xenios_ai.llm.structured import InvalidOutput, OutputSpec, default_request, unwrap_fence
from xenios_ai.llm.tasks import Task
from xenios_ai.llm.types import Options
from xenios_ai.llm.wire import Message

_decode_json = msgspec.json.Decoder().decode
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


@dataclass(frozen=True, slots=True)
class Prepared:
    """A request as the router takes it."""

    task: Task
    messages: list[Message] | None
    input: str | None
    output: OutputSpec | None
    options: Options | None
    stream: bool
    include_usage: bool

    @property
    def one_shot(self) -> bool:
        """Served as one completion (typed task, or a response_format), even when streamed."""
        return self.output is not None or self.task.output == "json"


# -- request ------------------------------------------------------------------------------------------


def _text_of(index: int, content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for part_index, part in enumerate(content):
        if part.type != "text":
            raise unsupported(
                f"messages[{index}].content[{part_index}].type",
                f"content parts of type {part.type[:40]!r} are not supported; send text",
            )
        if part.text is None or part.image_url is not None or part.input_audio is not None:
            raise invalid(f"messages[{index}].content[{part_index}]", "a text part holds `text` only")
        texts.append(part.text)
    return "".join(texts)


def _messages(data: ChatCompletionRequest) -> list[Message]:
    messages = []
    total = 0
    for index, message in enumerate(data.messages):
        role = _ROLES.get(message.role)
        if role is None:
            if message.role in ("tool", "function"):
                raise unsupported(f"messages[{index}].role", f"{message.role!r} messages are not supported")
            raise invalid(f"messages[{index}].role", f"unknown role {message.role[:40]!r}")
        text = _text_of(index, message.content)
        if role == "user" and not text:
            raise invalid(f"messages[{index}].content", "a user message needs text")
        total += len(text)
        messages.append(Message(role, text))
    if total > MAX_PROMPT_CHARS:
        raise invalid("messages", f"messages hold at most {MAX_PROMPT_CHARS} characters in all")
    return messages


def _options(data: ChatCompletionRequest, task: Task) -> Options | None:
    if data.temperature is not None and not 0.0 <= data.temperature <= 2.0:
        raise invalid("temperature", "temperature must be within 0..2")
    param, max_tokens = "max_completion_tokens", data.max_completion_tokens
    if data.max_tokens is not None:
        if max_tokens is not None and max_tokens != data.max_tokens:
            raise invalid("max_tokens", "max_tokens and max_completion_tokens differ; send one")
        param, max_tokens = "max_tokens", data.max_tokens
    if max_tokens is not None and not 1 <= max_tokens <= task.max_tokens:
        raise invalid(param, f"{param} must be within 1..{task.max_tokens} for {task.name}")
    if data.temperature is None and max_tokens is None and data.redact is None and data.redact_names is None:
        return None
    return Options(
        temperature=data.temperature,
        max_tokens=max_tokens,
        redact=data.redact,
        redact_names=data.redact_names,
    )


def _object_spec(response_format: dict[str, Any], required: list[str]) -> OutputSpec:
    """A text task's JSON output: a JSON object with the ``required`` top-level keys."""

    def parse(content: str) -> Any:
        try:
            value = _decode_json(unwrap_fence(content))
        except msgspec.DecodeError as exc:
            raise InvalidOutput(f"the answer is not JSON: {exc}") from None
        if not isinstance(value, dict):
            raise InvalidOutput("the answer is not a JSON object")
        missing = [key for key in required if key not in value]
        if missing:
            raise InvalidOutput(f"the answer lacks {', '.join(missing)}")
        return value

    return OutputSpec(response_format, parse)


def _text_output(response_format: ResponseFormat | None) -> OutputSpec | None:
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_object":
        return _object_spec({"type": "json_object"}, [])
    spec = response_format.json_schema
    if spec is None:
        raise invalid("response_format.json_schema", "json_schema needs its `json_schema` object")
    wire_spec: dict[str, Any] = {"name": spec.name}
    if spec.schema is not None:
        wire_spec["schema"] = spec.schema
    if spec.strict is not None:
        wire_spec["strict"] = spec.strict
    required = (spec.schema or {}).get("required")
    keys = [key for key in required if isinstance(key, str)] if isinstance(required, list) else []
    return _object_spec({"type": "json_schema", "json_schema": wire_spec}, keys)


def _typed_format(task: Task, response_format: ResponseFormat | None) -> None:
    """A typed task answers its own schema; a client's schema must describe (part of) it."""
    if response_format is None or response_format.type == "json_object":
        return
    if response_format.type == "text":
        raise invalid("response_format.type", f"{task.name} answers JSON; ask for json_object or json_schema")
    client = response_format.json_schema.schema if response_format.json_schema is not None else None
    if client is None:
        return
    ours = default_request(task.name, "-")[1].response_format["json_schema"]["schema"]
    fields = set(ours["properties"])
    theirs = client.get("properties")
    required = client.get("required") or []
    if (
        client.get("type", "object") != "object"
        or not isinstance(theirs, dict)
        or not set(theirs) <= fields
        or not isinstance(required, list)
        or not set(required) <= fields
    ):
        raise invalid(
            "response_format.json_schema.schema",
            f"{task.name} answers an object with {', '.join(sorted(fields))}; the schema asks for another",
        )


def prepare(data: ChatCompletionRequest, tasks: Any) -> Prepared:
    """Check the request against what we serve; every refusal names its parameter."""
    task: Task | None = tasks.get(data.model)
    if task is None:
        raise InvalidInput(
            f"the model {data.model[:64]!r} does not exist; see GET /v1/models", code="unknown_task"
        )
    if data.n is not None and data.n != 1:
        raise unsupported("n", "only n=1 is supported")
    if data.logprobs:
        raise unsupported("logprobs", "logprobs are not supported")
    if data.stream_options is not None and not data.stream:
        raise invalid("stream_options", "stream_options is only allowed with stream: true")
    include_usage = bool(data.stream_options and data.stream_options.include_usage)
    messages = _messages(data)
    options = _options(data, task)
    if task.output == "json":
        _typed_format(task, data.response_format)
        if len(messages) != 1 or messages[0].role != "user":
            raise invalid("messages", f"{task.name} takes one user message: the text")
        return Prepared(task, None, messages[0].content, None, options, bool(data.stream), include_usage)
    output = _text_output(data.response_format)
    return Prepared(task, messages, None, output, options, bool(data.stream), include_usage)
