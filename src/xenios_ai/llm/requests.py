"""What a call sends: the checked request (`build_call`: task input or messages, options, redaction,
prompt-cache breakpoints) and the upstream body for one model (`request_body`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from xenios_ai.errors import InvalidInput
from xenios_ai.llm import redaction, wire
from xenios_ai.llm.call import Call
from xenios_ai.llm.structured import OutputSpec, default_request
from xenios_ai.llm.tasks import Task
from xenios_ai.llm.types import Options

_MARKER_FAMILIES = ("anthropic/", "google/gemini")
"""Model families whose prompt caching needs explicit ``cache_control`` breakpoints (OpenAI, DeepSeek,
Grok and others cache prefixes by themselves)."""


def build_call(
    task: Task,
    messages: Sequence[wire.Message | Mapping[str, str]] | None,
    input: str | None,
    output: OutputSpec | None,
    options: Options | None,
    mode: Literal["complete", "stream"],
    owner: str | None,
    request_id: str | None,
    job_id: str | None,
    *,
    redact_tasks: frozenset[str],
    cache_min_chars: int,
) -> Call:
    """The call for ``task``, checked (422 ``invalid_llm_input``) and redacted when asked (failing closed)."""
    if (messages is None) == (input is None):
        raise InvalidInput("give either messages or input", code="invalid_llm_input")
    if input is not None:
        if task.output == "json" and output is None:
            input, output = default_request(task.name, input)
        chat = [wire.Message("system", task.system_prompt), wire.Message("user", input)]
    else:
        assert messages is not None
        if not messages:
            raise InvalidInput("messages must not be empty", code="invalid_llm_input")
        if task.output == "json" and output is None:
            raise InvalidInput(f"task {task.name!r} takes input, not messages", code="invalid_llm_input")
        chat = [wire.Message("system", task.system_prompt)]
        chat.extend(
            m if isinstance(m, wire.Message) else wire.Message(m["role"], m["content"]) for m in messages
        )
    temperature, max_tokens = task.temperature, task.max_tokens
    if options is not None:
        if options.temperature is not None:
            if not 0.0 <= options.temperature <= 2.0:
                raise InvalidInput("temperature must be within 0..2", code="invalid_llm_input")
            temperature = options.temperature
        if options.max_tokens is not None:
            if not 1 <= options.max_tokens <= task.max_tokens:
                raise InvalidInput(
                    f"max_tokens must be within 1..{task.max_tokens} for {task.name}",
                    code="invalid_llm_input",
                )
            max_tokens = options.max_tokens
    redactor = redaction.for_call(redact_tasks, task.name, options)
    if redactor is not None:  # before anything is sent, failing closed (redaction_failed)
        chat = redaction.redact_chat(redactor, chat)
    marked = cache_breakpoints(task, chat, input is not None, cache_min_chars)
    call = Call(task, mode, chat, temperature, max_tokens, output, owner, request_id, job_id, marked)
    call.redactor = redactor
    return call


def cache_breakpoints(
    task: Task, chat: list[wire.Message], from_input: bool, least: int
) -> list[wire.Message | wire.PartsMessage] | None:
    """The messages with ``cache_control`` on the parts worth caching, or None when none is.

    Marked when at least ``least`` (LLM_CACHE_MIN_CHARS) long (shorter prefixes are below the providers'
    minimum, ~1,024 tokens): the system prompt; an analysis's input (the transcript or document);
    a conversation's last message (so the next turn reads the conversation so far from the cache).
    """
    if least <= 0:
        return None
    marked = set()
    if len(chat[0].content) >= least:
        marked.add(0)
    if from_input:
        if task.cache_input and len(chat[-1].content) >= least:
            marked.add(len(chat) - 1)
    elif sum(len(m.content) for m in chat) >= least:
        marked.add(len(chat) - 1)
    return wire.mark_for_cache(chat, marked) if marked else None


def request_body(call: Call, model: str) -> bytes:
    """The upstream request for ``model`` (always streamed; cache markers where the model needs them)."""
    marked = call.marked is not None and model.startswith(_MARKER_FAMILIES)
    return wire.request_body(
        model,
        call.marked if marked and call.marked is not None else call.messages,
        temperature=call.temperature,
        max_tokens=call.max_tokens,
        stream=True,
        response_format=call.output.response_format if call.output is not None else None,
        provider=call.task.provider,
    )
