"""What a failed upstream attempt means: retry the model, try the next one, or stop (DESIGN.md section 4).

The policy is data: `RETRY_STATUSES` (and every 5xx) are transient and retried on the same model;
`NEXT_MODEL_STATUSES` concern one model only; `REFUSED_STATUSES` are the request's fault and end it with
a 422, never retried and never sent to another model; 401 and 402 concern the account, so another model
would not help either. A 403 is the request's fault only when it carries OpenRouter's moderation metadata
(``error.metadata.reasons`` / ``flagged_input``); any other 403 (a provider or model the account may not
use, a blocked region) is logged at ERROR and moves to the next model. Connection errors are retried;
timeouts and invalid output move to the next model. The aiohttp transport reports every connection error
(refused, reset before the headers, a stale keep-alive connection) as a connect *timeout*, so the cause
chain is read to tell them apart. Upstream messages are cut to 300 characters and scrubbed of the API key
before they reach an error.
"""

from __future__ import annotations

import contextlib
import email.utils
import math
import time
from collections.abc import Sequence
from typing import Literal

import aiohttp
import httpx2
import msgspec
import openai
from loguru import logger

from xenios_ai.errors import InvalidInput, UpstreamError, UpstreamTimeout, UpstreamUnavailable, XeniosError
from xenios_ai.llm import wire

Kind = Literal["retry", "next", "fatal"]

RETRY_STATUSES = frozenset({408, 409, 429})
"""Plus every 5xx."""
NEXT_MODEL_STATUSES = frozenset({404})
"""Plus a 400 whose message says the model ID is not valid (OpenRouter's answer to an unknown model)."""
REFUSED_STATUSES = frozenset({400, 413, 422})
"""Plus a 403 with moderation metadata (see the module docstring)."""
UNAVAILABLE_STATUSES = frozenset({408, 409, 429, 503})
"""When the last attempt failed with one of these (or could not connect), every-model-failed is a 503."""

_TRANSPORT_ERRORS = (openai.APIConnectionError, httpx2.TransportError, aiohttp.ClientError, OSError)
_TIMEOUTS = (TimeoutError, openai.APITimeoutError, httpx2.TimeoutException)
_MAX_RETRY_AFTER_HEADER = 86_400
"""The longest Retry-After (seconds) passed on to our client."""


class Failed(Exception):
    """An attempt failed: ``error`` names how (``http_503``, ``timeout``, ``invalid_output``, ...)."""

    def __init__(
        self,
        kind: Kind,
        error: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        fatal: XeniosError | None = None,
    ) -> None:
        super().__init__(error)
        self.kind = kind
        self.error = error
        self.status = status
        self.retry_after = retry_after
        self.fatal = fatal
        """The error that ends the request (kind ``fatal``)."""

    def final_error(self) -> XeniosError:
        return self.fatal or UpstreamError(self.error, code="upstream_error")


class Attempt(msgspec.Struct, omit_defaults=True):
    """One upstream call: the model, and what went wrong (``error`` unset: it succeeded)."""

    model: str
    duration_ms: float
    error: str | None = None
    status: int | None = None


def classify(exc: BaseException, secret: str = "") -> Failed:
    """The meaning of an exception raised by one attempt (anything unexpected is re-raised)."""
    if isinstance(exc, openai.APIStatusError):
        return classify_status(exc.status_code, exc.response, secret)
    if isinstance(exc, _TIMEOUTS):
        if _lost_connection(exc):
            return Failed("retry", "connection_error")
        return Failed("next", "timeout")
    if isinstance(exc, _TRANSPORT_ERRORS):
        return Failed("retry", "connection_error")
    if isinstance(exc, msgspec.DecodeError | msgspec.ValidationError):
        return Failed("retry", "invalid_response")
    if isinstance(exc, wire.TooLarge):
        return Failed("next", "response_too_large")
    raise exc


def _lost_connection(exc: BaseException) -> bool:
    """Whether a "timeout" was really a connection error: the vendored aiohttp transport maps every
    ``aiohttp.ClientConnectionError`` to ``httpx2.ConnectTimeout`` (which the SDK makes an
    ``APITimeoutError``); the aiohttp exception is still in the cause chain."""
    seen: BaseException | None = exc
    for _ in range(8):  # the chain is short; a bound keeps a cyclic one harmless
        if seen is None:
            return False
        if isinstance(seen, aiohttp.ClientConnectionError) and not isinstance(seen, TimeoutError):
            return True  # aiohttp's ServerTimeoutError (and its subclasses) are TimeoutErrors
        seen = seen.__cause__ or seen.__context__
    return False


def classify_status(status: int, response: httpx2.Response, secret: str = "") -> Failed:
    body = _error_body(response)
    message = _message(body, secret)
    error = f"http_{status}"
    if status in RETRY_STATUSES or status >= 500:
        return Failed("retry", error, status=status, retry_after=retry_after(response.headers))
    if status in NEXT_MODEL_STATUSES or (status == 400 and "not a valid model" in message.lower()):
        return Failed("next", "model_unavailable", status=status)
    if status == 403 and not _moderated(body):
        logger.error(
            "the LLM provider answered 403 without moderation metadata (model or provider not allowed for"
            " this account?): {}",
            message,
        )
        return Failed("next", error, status=status)
    fatal: XeniosError
    if status in REFUSED_STATUSES or status == 403:
        fatal = InvalidInput(f"the model provider refused the request: {message}", code="upstream_rejected")
    elif status == 401:
        logger.error("the LLM provider rejected the API key (401): check OPENROUTER_API_KEY")
        fatal = UpstreamError(
            "the LLM provider rejected the service's credentials", code="upstream_auth_failed"
        )
    elif status == 402:
        logger.error("the LLM provider says the account is out of credits (402)")
        fatal = UpstreamUnavailable(
            "the LLM provider account is out of credits", code="upstream_payment_required"
        )
    else:
        fatal = UpstreamError(f"the model provider answered {status}: {message}", code="upstream_error")
    return Failed("fatal", error, status=status, fatal=fatal)


def interrupted(failed: Failed, model: str, idle_timeout: float) -> Failed:
    """A failure after text was streamed: it ends the stream with an error, never a restart."""
    failed.kind = "fatal"
    if failed.error == "stream_stalled":
        failed.fatal = UpstreamTimeout(
            f"{model} sent nothing for {idle_timeout:g}s; the answer is incomplete", code="upstream_stalled"
        )
    elif failed.error in ("stream_error", "invalid_response", "response_too_large"):
        failed.fatal = UpstreamError(
            f"{model} reported an error mid-stream; the answer is incomplete", code="upstream_stream_error"
        )
    else:
        failed.fatal = UpstreamError(
            f"{model} disconnected mid-stream; the answer is incomplete", code="upstream_disconnected"
        )
    return failed


def all_failed(task: str, attempts: Sequence[Attempt], retry_after: float | None) -> XeniosError:
    """Every model failed: 504 when the last attempt timed out, 503 when it was unavailable, else 502."""
    last = attempts[-1]
    extra = {"attempts": [msgspec.to_builtins(a) for a in attempts]}
    detail = f"every model of {task} failed: " + ", ".join(f"{a.model} ({a.error})" for a in attempts)
    if last.error in ("timeout", "first_token_timeout"):
        return UpstreamTimeout(detail, code="upstream_timeout", extra=extra)
    if last.status in UNAVAILABLE_STATUSES or last.error == "connection_error":
        error = UpstreamUnavailable(detail, code="upstream_unavailable", extra=extra)
        if retry_after is not None:
            error.headers["Retry-After"] = str(max(1, min(_MAX_RETRY_AFTER_HEADER, round(retry_after))))
        return error
    return UpstreamError(detail, code="upstream_error", extra=extra)


def _error_body(response: httpx2.Response) -> wire.WireErrorBody | None:
    try:
        return wire.decode_error_body(response.content)
    except (msgspec.DecodeError, msgspec.ValidationError, httpx2.HTTPError):
        return None


def _message(body: wire.WireErrorBody | None, secret: str) -> str:
    message = body.error.message[:300] if body is not None and body.error is not None else ""
    return message.replace(secret, "***") if secret else message


def _moderated(body: wire.WireErrorBody | None) -> bool:
    """OpenRouter's moderation refusal: ``error.metadata`` names ``reasons`` or the ``flagged_input``."""
    metadata = body.error.metadata if body is not None and body.error is not None else None
    return isinstance(metadata, dict) and bool(metadata.get("reasons") or metadata.get("flagged_input"))


def _finite(seconds: float) -> float | None:
    return max(0.0, seconds) if math.isfinite(seconds) else None


def retry_after(headers: httpx2.Headers) -> float | None:
    """Seconds from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date); a value that is not a
    finite number (``inf``, ``1e999``, ``nan``) is ignored."""
    value = headers.get("retry-after-ms")
    if value is not None:
        with contextlib.suppress(ValueError):
            seconds = _finite(float(value) / 1000)
            if seconds is not None:
                return seconds
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return _finite(float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
