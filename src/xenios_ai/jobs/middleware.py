"""Worker middleware that is not the runtime: log context for every message."""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager
from typing import Any

import dramatiq
from loguru import logger

from xenios_ai.jobs.models import kind_of_actor


class LogContext(dramatiq.Middleware):
    """Bind actor, queue, message id and, for job actors, job id and kind into every log line written
    while a message is processed, Dramatiq's own lines included."""

    def __init__(self) -> None:
        self._local = threading.local()

    def before_process_message(self, broker: Any, message: Any) -> None:
        context: dict[str, str] = {
            "actor": message.actor_name,
            "queue": message.queue_name,
            "message_id": message.message_id,
        }
        if message.args and isinstance(message.args[0], str):
            context["job_id"] = message.args[0]
        if (kind := kind_of_actor(message.actor_name)) is not None:
            context["kind"] = kind
        manager: AbstractContextManager[None] = logger.contextualize(**context)
        manager.__enter__()
        self._stack().append(manager)

    def after_process_message(
        self, broker: Any, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        stack = self._stack()
        if stack:
            stack.pop().__exit__(None, None, None)

    after_skip_message = after_process_message

    def _stack(self) -> list[AbstractContextManager[None]]:
        stack: list[AbstractContextManager[None]] | None = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack
