"""The one error tree of the service.

Every error the service raises on purpose is a ``XeniosError``. Its class fixes the HTTP status and the
default stable ``code`` (the API maps it to an RFC 9457 problem); an instance may carry a more specific
``code`` (``password_required`` is an ``InvalidInput``). ``retryable`` is the actor retry policy: only
transient upstream trouble is retried, bad input never is.
"""

from __future__ import annotations

from typing import Any, ClassVar


class XeniosError(Exception):
    """Root of the tree: status 500, code ``internal_error``, never retried."""

    status: ClassVar[int] = 500
    default_code: ClassVar[str] = "internal_error"
    title: ClassVar[str] = "Internal Server Error"
    retryable: ClassVar[bool] = False

    def __init__(
        self,
        detail: str | None = None,
        *,
        code: str | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.detail = detail or self.title
        self.code = code or self.default_code
        self.extra = extra or {}
        self.headers = headers or {}
        super().__init__(self.detail)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, detail={self.detail!r})"


class InvalidInput(XeniosError):
    """The request or the job's input is wrong: fixing it is the caller's job."""

    status = 422
    default_code = "invalid_input"
    title = "Invalid input"


class Unauthorized(XeniosError):
    status = 401
    default_code = "unauthorized"
    title = "Unauthorized"


class Forbidden(XeniosError):
    status = 403
    default_code = "forbidden"
    title = "Forbidden"


class NotFound(XeniosError):
    status = 404
    default_code = "not_found"
    title = "Not found"


class Conflict(XeniosError):
    status = 409
    default_code = "conflict"
    title = "Conflict"


class RequestTimeout(XeniosError):
    status = 408
    default_code = "request_timeout"
    title = "Request timeout"


class PayloadTooLarge(XeniosError):
    status = 413
    default_code = "payload_too_large"
    title = "Payload too large"


class UnsupportedMediaType(XeniosError):
    status = 415
    default_code = "unsupported_media_type"
    title = "Unsupported media type"


class RateLimited(XeniosError):
    status = 429
    default_code = "rate_limited"
    title = "Too many requests"

    def __init__(self, detail: str | None = None, *, retry_after: float = 1.0, **kwargs: Any) -> None:
        super().__init__(detail, **kwargs)
        self.retry_after = retry_after
        self.headers.setdefault("Retry-After", str(max(1, round(retry_after))))


class ClientGone(XeniosError):
    """The client closed the connection before the answer (nginx's 499): mid-body or while waiting.

    Nobody reads this response; it is there for the request log and the metrics, never as an error.
    """

    status = 499
    default_code = "client_disconnected"
    title = "Client closed request"


class UpstreamError(XeniosError):
    """An upstream answered, but not usefully (bad gateway)."""

    status = 502
    default_code = "upstream_error"
    title = "Bad gateway"


class UpstreamUnavailable(XeniosError):
    """An upstream or a backing service cannot be reached now; trying again later may work."""

    status = 503
    default_code = "upstream_unavailable"
    title = "Service unavailable"
    retryable = True


class UpstreamTimeout(XeniosError):
    status = 504
    default_code = "upstream_timeout"
    title = "Gateway timeout"
    retryable = True


class JobCancelled(XeniosError):
    """Raised inside a running job at a progress checkpoint once the job was cancelled."""

    status = 409
    default_code = "cancelled"
    title = "Job cancelled"


class LimitExceeded(InvalidInput):
    """A configured limit (pages, duration, time) was exceeded by the input."""

    status = 422
    default_code = "limit_exceeded"
    title = "Limit exceeded"
