"""Every Prometheus metric the processes record, declared once, and the recorders the hot paths call.

Names follow Prometheus conventions: ``xenios_`` prefix, base units in the name (``_seconds``,
``_usd``), counters end in ``_total``, labels have small bounded value sets (a route is its template,
never the raw path). Gauges that describe the whole system (jobs by state, queue depths, workers) are
not recorded here: the API computes them when scraped (`jobs.gauges.SystemState`).

The recorders keep the hot path cheap (measured with multi-process files: ~3.5 us per HTTP request,
~10 us per LLM request): each caches its labelled children, so a request costs a dict lookup and the
value updates, never a ``labels()`` call. ``xenios_http_requests_total`` is not recorded at all: the
exposition derives it from the duration histogram's ``_count`` (the same number, one update less).

In multi-process mode (PROMETHEUS_MULTIPROC_DIR, set up by the CLI, see `exposition`) the values live in
per-process files; the environment variable must be set before this module is first imported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

# No ``_created`` series: they double the output and nobody graphs them.
disable_created_metrics()  # type: ignore[no-untyped-call]

_LATENCY = (0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_LLM = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0, 300.0)
_JOB = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 14400.0)
_WAIT = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)

# -- HTTP (API processes) ------------------------------------------------------------------------------

HTTP_REQUEST_DURATION_NAME = "xenios_http_request_duration_seconds"
HTTP_REQUEST_DURATION = Histogram(
    HTTP_REQUEST_DURATION_NAME,
    "Time from the request's arrival to the end of its response (whole stream for SSE), by route template.",
    ["method", "route", "status"],
    buckets=_LATENCY,
)
HTTP_REQUESTS_TOTAL = "xenios_http_requests_total"
"""Derived at scrape time from HTTP_REQUEST_DURATION's ``_count`` (see the module docstring)."""

# -- LLM (API and worker processes) --------------------------------------------------------------------

LLM_REQUESTS = Counter(
    "xenios_llm_requests_total",
    "LLM task requests by the model that answered last and outcome (succeeded, failed, cancelled).",
    ["task", "model", "outcome"],
)
LLM_TOKENS = Counter(
    "xenios_llm_tokens_total",
    "Tokens reported by the provider, by type (prompt, completion).",
    ["task", "model", "type"],
)
LLM_COST = Counter(
    "xenios_llm_cost_usd_total", "Cost reported by OpenRouter (usage.cost), in USD.", ["task", "model"]
)
LLM_DURATION = Histogram(
    "xenios_llm_request_duration_seconds",
    "Whole LLM request through the model chain (retries and fallbacks included).",
    ["task", "model"],
    buckets=_LLM,
)
LLM_TTFT = Histogram(
    "xenios_llm_time_to_first_token_seconds",
    "Streams: time from the request to its first text.",
    ["task", "model"],
    buckets=_LLM,
)
LLM_FALLBACKS = Counter(
    "xenios_llm_fallbacks_total",
    "LLM requests that ended on a fallback model (the model label).",
    ["task", "model"],
)
LLM_ATTEMPT_FAILURES = Counter(
    "xenios_llm_attempt_failures_total",
    "Failed upstream attempts (retried, fallen back from, or final), by model and error.",
    ["model", "error"],
)

# -- jobs (worker processes) ---------------------------------------------------------------------------

JOB_ATTEMPTS = Counter(
    "xenios_job_attempts_total",
    "Job attempts by how they ended: succeeded, failed, cancelled, retried (queued again after a transient "
    "error), released (handed back at shutdown), lost (taken over by another worker).",
    ["kind", "queue", "outcome"],
)
JOB_ATTEMPT_DURATION = Histogram(
    "xenios_job_attempt_duration_seconds", "Duration of job attempts.", ["kind", "queue"], buckets=_JOB
)
JOB_QUEUE_WAIT = Histogram(
    "xenios_job_queue_wait_seconds",
    "Time from a job's message being sent to a worker claiming it.",
    ["kind", "queue"],
    buckets=_WAIT,
)

# -- Dramatiq messages (worker processes; what dramatiq.middleware.prometheus counts) ------------------

WORKER_MESSAGES = Counter(
    "xenios_worker_messages_total",
    "Messages processed by actor and outcome (ok, error: the actor raised, skipped).",
    ["queue", "actor", "outcome"],
)
WORKER_MESSAGE_RETRIES = Counter(
    "xenios_worker_message_retries_total", "Messages sent again by Dramatiq's retries.", ["queue", "actor"]
)
WORKER_MESSAGES_DEAD = Counter(
    "xenios_worker_messages_dead_total", "Messages dead-lettered (out of retries).", ["queue", "actor"]
)
WORKER_MESSAGE_DURATION = Histogram(
    "xenios_worker_message_duration_seconds",
    "Time spent processing messages.",
    ["queue", "actor"],
    buckets=_JOB,
)
WORKER_RESTARTS = Counter(
    "xenios_worker_restarts_total",
    "Worker processes `xenios-ai worker` restarted after they stopped unexpectedly (killed, crashed).",
)
WORKER_MESSAGES_IN_PROGRESS = Gauge(
    "xenios_worker_messages_in_progress",
    "Messages being processed now (live processes only).",
    ["queue", "actor"],
    multiprocess_mode="livesum",
)


class Children:
    """A metric's labelled children by label values, so the hot path never calls ``labels()``."""

    __slots__ = ("_children", "_metric")

    def __init__(self, metric: Any) -> None:
        self._metric = metric
        self._children: dict[tuple[str | int, ...], Any] = {}

    def __call__(self, *labels: str | int) -> Any:
        """The child for these label values (``labels()`` makes strings of them: an HTTP status may be
        passed as the int it is, no ``str()`` per call)."""
        child = self._children.get(labels)
        if child is None:
            child = self._children[labels] = self._metric.labels(*labels)
        return child


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_http_duration = Children(HTTP_REQUEST_DURATION)


def observe_http(method: str, route: str | None, status: int, seconds: float) -> None:
    """One finished HTTP request; ``route`` is the matched template (None: no route matched)."""
    if method not in _METHODS:
        method = "OTHER"
    _http_duration(method, route or "unmatched", status).observe(seconds)


_llm_requests = Children(LLM_REQUESTS)
_llm_tokens = Children(LLM_TOKENS)
_llm_cost = Children(LLM_COST)
_llm_duration = Children(LLM_DURATION)
_llm_ttft = Children(LLM_TTFT)


class LLMRequest(Protocol):
    """What the LLM metrics read of a finished request (the router's usage row, `llm.usage.UsageRecord`)."""

    @property
    def task(self) -> str: ...
    @property
    def model(self) -> str | None: ...
    @property
    def status(self) -> str: ...
    @property
    def prompt_tokens(self) -> int | None: ...
    @property
    def completion_tokens(self) -> int | None: ...
    @property
    def cost_usd(self) -> float | None: ...
    @property
    def latency_ms(self) -> float: ...
    @property
    def ttft_ms(self) -> float | None: ...
    @property
    def fallback_used(self) -> bool: ...
    @property
    def attempts(self) -> Sequence[Mapping[str, Any]]: ...


def observe_llm(usage: LLMRequest) -> None:
    """One finished LLM request, from the usage row the router writes anyway."""
    task, model = usage.task, usage.model or "none"
    _llm_requests(task, model, usage.status).inc()
    if usage.prompt_tokens:
        _llm_tokens(task, model, "prompt").inc(usage.prompt_tokens)
    if usage.completion_tokens:
        _llm_tokens(task, model, "completion").inc(usage.completion_tokens)
    if usage.cost_usd:
        _llm_cost(task, model).inc(usage.cost_usd)
    _llm_duration(task, model).observe(usage.latency_ms / 1000)
    if usage.ttft_ms is not None:
        _llm_ttft(task, model).observe(usage.ttft_ms / 1000)
    if usage.fallback_used:
        LLM_FALLBACKS.labels(task, model).inc()
    for attempt in usage.attempts:
        error = attempt.get("error")
        if error and error != "cancelled":  # the caller left: not an upstream failure
            LLM_ATTEMPT_FAILURES.labels(attempt.get("model") or "none", error).inc()


def observe_job_claimed(kind: str, queue: str, waited_seconds: float) -> None:
    JOB_QUEUE_WAIT.labels(kind, queue).observe(max(0.0, waited_seconds))


def observe_job_attempt(kind: str, queue: str, outcome: str, seconds: float) -> None:
    JOB_ATTEMPTS.labels(kind, queue, outcome).inc()
    JOB_ATTEMPT_DURATION.labels(kind, queue).observe(seconds)


class LLMMetrics:
    """The LLM metrics as the router's second usage sink (``LLMRouter(..., metrics=LLM_METRICS)``)."""

    def record(self, usage: LLMRequest) -> None:
        observe_llm(usage)


LLM_METRICS = LLMMetrics()
