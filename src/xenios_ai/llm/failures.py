"""What a failed upstream attempt means: retry the model, try the next one, or stop (DESIGN.md section 4).

The policy is data: `RETRY_STATUSES` (and every 5xx) are transient and retried on the same model;
`NEXT_MODEL_STATUSES` concern one model only; `REFUSED_STATUSES` are the request's fault and end it with
a 422, never retried and never sent to another model; 401 and 402 concern the account, so another model
would not help either. Connection errors are retried; timeouts and invalid output move to the next model.
Upstream messages are cut to 300 characters and scrubbed of the API key before they reach an error.
"""

from __future__ import annotations

import email.utils
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
REFUSED_STATUSES = frozenset({400, 403, 413, 422})
UNAVAILABLE_STATUSES = frozenset({408, 409, 429, 503})
"""When the last attempt failed with one of these (or could not connect), every-model-failed is a 503."""

_TRANSPORT_ERRORS = (openai.APIConnectionError, httpx2.TransportError, aiohttp.ClientError, OSError)
_TIMEOUTS = (TimeoutError, openai.APITimeoutError, httpx2.TimeoutException)


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
        return Failed("next", "timeout")
    if isinstance(exc, _TRANSPORT_ERRORS):
        return Failed("retry", "connection_error")
    if isinstance(exc, msgspec.DecodeError | msgspec.ValidationError):
        return Failed("retry", "invalid_response")
    raise exc


def classify_status(status: int, response: httpx2.Response, secret: str = "") -> Failed:
    message = upstream_message(response, secret)
    error = f"http_{status}"
    if status in RETRY_STATUSES or status >= 500:
        return Failed("retry", error, status=status, retry_after=retry_after(response.headers))
    if status in NEXT_MODEL_STATUSES or (status == 400 and "not a valid model" in message.lower()):
        return Failed("next", "model_unavailable", status=status)
    fatal: XeniosError
    if status in REFUSED_STATUSES:
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
    elif failed.error in ("stream_error", "invalid_response"):
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
            error.headers["Retry-After"] = str(max(1, round(retry_after)))
        return error
    return UpstreamError(detail, code="upstream_error", extra=extra)


def upstream_message(response: httpx2.Response, secret: str = "") -> str:
    try:
        body = wire.decode_error_body(response.content)
        message = body.error.message if body.error is not None else ""
    except (msgspec.DecodeError, msgspec.ValidationError, httpx2.HTTPError):
        message = ""
    message = message[:300]
    return message.replace(secret, "***") if secret else message


def retry_after(headers: httpx2.Headers) -> float | None:
    """Seconds from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
